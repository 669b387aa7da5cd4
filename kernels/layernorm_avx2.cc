// AVX2 layer norm, 8 lanes; the twin of layernorm_avx512.cc with vmaskmov tails.
#include <tessera/kernels/layernorm.h>
#include <tessera/kernels/vec_math_avx2.h>

#include <cmath>

namespace tessera::kernels {
namespace {

using v256::kLanes;
using v256::load_tail;
using v256::store_tail;

constexpr size_t kBlock = 1024;

inline __m256 lanes(size_t n) { return _mm256_castsi256_ps(v256::tail_mask(n)); }

template <typename Term>
float block_sum(const float* x, size_t n, Term term) {
  __m256 total = _mm256_setzero_ps();
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    size_t i = b;
    for (; i + 2 * kLanes <= e; i += 2 * kLanes) {
      a0 = _mm256_add_ps(a0, term(_mm256_loadu_ps(x + i)));
      a1 = _mm256_add_ps(a1, term(_mm256_loadu_ps(x + i + kLanes)));
    }
    for (; i < e; i += kLanes) a0 = _mm256_add_ps(a0, _mm256_and_ps(lanes(e - i), term(load_tail(x + i, e - i))));
    total = _mm256_add_ps(total, _mm256_add_ps(a0, a1));
  }
  return v256::hsum(total);
}

void forward_256(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                 float* rstd, size_t rows, size_t cols, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float mu = block_sum(xr, cols, [](__m256 v) { return v; }) / static_cast<float>(cols);
    const __m256 vmu = _mm256_set1_ps(mu);
    const float var = block_sum(xr, cols, [vmu](__m256 v) {
                        __m256 d = _mm256_sub_ps(v, vmu);
                        return _mm256_mul_ps(d, d);
                      }) / static_cast<float>(cols);
    const float rs = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
    mean[r] = mu;
    rstd[r] = rs;
    const __m256 vrs = _mm256_set1_ps(rs);
    for (size_t i = 0; i < cols; i += kLanes) {
      const size_t n = cols - i;
      __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load_tail(xr + i, n), vmu), vrs);
      store_tail(yr + i, n, _mm256_fmadd_ps(xhat, load_tail(gamma + i, n), load_tail(beta + i, n)));
    }
  }
}

void backward_256(const float* x, const float* dy, const float* gamma, const float* mean,
                  const float* rstd, float* dx, float* dgamma_acc, float* dbeta_acc, size_t rows,
                  size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    const __m256 vmu = _mm256_set1_ps(mean[r]), vrs = _mm256_set1_ps(rstd[r]);
    __m256 ta = _mm256_setzero_ps(), tb = ta;
    for (size_t b = 0; b < cols; b += kBlock) {
      const size_t e = b + kBlock < cols ? b + kBlock : cols;
      __m256 sa = _mm256_setzero_ps(), sb = sa;
      for (size_t i = b; i < e; i += kLanes) {
        const size_t n = e - i;
        __m256 xhat = _mm256_and_ps(lanes(n), _mm256_mul_ps(_mm256_sub_ps(load_tail(xr + i, n), vmu), vrs));
        __m256 d = load_tail(gr + i, n);
        __m256 g = _mm256_mul_ps(d, load_tail(gamma + i, n));
        sa = _mm256_add_ps(sa, g);
        sb = _mm256_fmadd_ps(g, xhat, sb);
        store_tail(dgamma_acc + i, n, _mm256_fmadd_ps(d, xhat, load_tail(dgamma_acc + i, n)));
        store_tail(dbeta_acc + i, n, _mm256_add_ps(d, load_tail(dbeta_acc + i, n)));
      }
      ta = _mm256_add_ps(ta, sa);
      tb = _mm256_add_ps(tb, sb);
    }
    const float inv = 1.0f / static_cast<float>(cols);
    const __m256 ma = _mm256_set1_ps(v256::hsum(ta) * inv), mb = _mm256_set1_ps(v256::hsum(tb) * inv);
    for (size_t i = 0; i < cols; i += kLanes) {
      const size_t n = cols - i;
      __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load_tail(xr + i, n), vmu), vrs);
      __m256 g = _mm256_mul_ps(load_tail(gr + i, n), load_tail(gamma + i, n));
      store_tail(dr + i, n, _mm256_mul_ps(vrs, _mm256_sub_ps(_mm256_sub_ps(g, ma), _mm256_mul_ps(xhat, mb))));
    }
  }
}

const LayerNormFns k256 = {forward_256, backward_256};
}  // namespace

const LayerNormFns* layernorm_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
