// Layer normalization over the last dimension of a row-major f32 [rows x cols] buffer.
//
//   kernels::layer_norm(x, gamma, beta, y, mean, rstd, rows, cols, 1e-5f);
//   kernels::layer_norm_backward(x, dy, gamma, mean, rstd, dx, dgamma, dbeta, rows, cols);
//
// Forward, per row r: mean[r] = sum_c x[r, c] / cols; var = sum_c (x[r, c] - mean[r])^2 / cols
// (biased, as PyTorch); rstd[r] = 1 / sqrt(var + eps);
// y[r, c] = (x[r, c] - mean[r]) * rstd[r] * gamma[c] + beta[c].
// The variance is computed in two passes (no E[x^2] - E[x]^2 cancellation); row sums accumulate
// in f32 per 1024-element block (vector rungs) or in double (scalar rung).
//
// Backward, with xhat = (x - mean) * rstd and g = dy * gamma:
//   dx[r, c] = rstd[r] * (g[r, c] - mean_c(g[r, :]) - xhat[r, c] * mean_c(g[r, :] * xhat[r, :]))
//   dgamma[c] = sum_r dy[r, c] * xhat[r, c];   dbeta[c] = sum_r dy[r, c]
// dgamma and dbeta are overwritten (not added to) with the sums over all rows. mean and rstd
// must be the forward's outputs for the same x and eps.
//
// Shapes: x, y, dy, dx are [rows x cols]; gamma, beta, dgamma, dbeta are [cols]; mean and rstd
// are [rows]. gamma == nullptr means all ones and beta == nullptr all zeros (no affine); in the
// forward, mean and rstd may be nullptr when not needed; in the backward, dgamma and dbeta may be
// nullptr when not needed. In place allowed: y == x, dx == dy. cols == 0 with rows > 0 and
// eps < 0 (or NaN) are ValueErrors.
//
// Threading: rows are split over oneTBB workers in fixed chunks (at most 64 for the backward,
// whose per-chunk dgamma/dbeta partials are summed in double in chunk order), so results are the
// same bits on every run.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>

namespace tessera::kernels {

void layer_norm(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                float* rstd, size_t rows, size_t cols, float eps);
void layer_norm_backward(const float* x, const float* dy, const float* gamma, const float* mean,
                         const float* rstd, float* dx, float* dgamma, float* dbeta, size_t rows,
                         size_t cols);

// One rung's single-threaded implementations. All pointers are non-null (the driver substitutes
// ones, zeros and scratch buffers); the backward adds its rows' dgamma/dbeta terms into
// dgamma_acc/dbeta_acc.
struct LayerNormFns {
  void (*forward)(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                  float* rstd, size_t rows, size_t cols, float eps);
  void (*backward)(const float* x, const float* dy, const float* gamma, const float* mean,
                   const float* rstd, float* dx, float* dgamma_acc, float* dbeta_acc, size_t rows,
                   size_t cols);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const LayerNormFns* layernorm_fns_scalar();
const LayerNormFns* layernorm_fns_avx2();
const LayerNormFns* layernorm_fns_avx512();
const LayerNormFns& layernorm_fns();
const char* layernorm_impl_name();

}  // namespace tessera::kernels
