// AVX-512 layer norm, 16 lanes, masked tails. Row sums accumulate per 1024-element block into a
// second accumulator (see layernorm.h for the accuracy contract).
#include <tessera/kernels/layernorm.h>
#include <tessera/kernels/vec_math_avx512.h>

#include <cmath>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

constexpr size_t kBlock = 1024;

// sum over i < n of term(x[i]) (masked lanes contribute term of 0-filled input masked to 0).
template <typename Term>
float block_sum(const float* x, size_t n, Term term) {
  __m512 total = _mm512_setzero_ps();
  for (size_t b = 0; b < n; b += kBlock) {
    const size_t e = b + kBlock < n ? b + kBlock : n;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    size_t i = b;
    for (; i + 2 * kLanes <= e; i += 2 * kLanes) {
      a0 = _mm512_add_ps(a0, term(_mm512_loadu_ps(x + i)));
      a1 = _mm512_add_ps(a1, term(_mm512_loadu_ps(x + i + kLanes)));
    }
    for (; i < e; i += kLanes) {
      __mmask16 k = tail_mask(e - i);
      a0 = _mm512_add_ps(a0, _mm512_maskz_mov_ps(k, term(_mm512_maskz_loadu_ps(k, x + i))));
    }
    total = _mm512_add_ps(total, _mm512_add_ps(a0, a1));
  }
  return v512::hsum(total);
}

void forward_512(const float* x, const float* gamma, const float* beta, float* y, float* mean,
                 float* rstd, size_t rows, size_t cols, float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float mu = block_sum(xr, cols, [](__m512 v) { return v; }) / static_cast<float>(cols);
    const __m512 vmu = _mm512_set1_ps(mu);
    const float var = block_sum(xr, cols, [vmu](__m512 v) {
                        __m512 d = _mm512_sub_ps(v, vmu);
                        return _mm512_mul_ps(d, d);
                      }) / static_cast<float>(cols);
    const float rs = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
    mean[r] = mu;
    rstd[r] = rs;
    const __m512 vrs = _mm512_set1_ps(rs);
    for (size_t i = 0; i < cols; i += kLanes) {
      __mmask16 k = tail_mask(cols - i);
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + i), vmu), vrs);
      __m512 v = _mm512_fmadd_ps(xhat, _mm512_maskz_loadu_ps(k, gamma + i), _mm512_maskz_loadu_ps(k, beta + i));
      _mm512_mask_storeu_ps(yr + i, k, v);
    }
  }
}

void backward_512(const float* x, const float* dy, const float* gamma, const float* mean,
                  const float* rstd, float* dx, float* dgamma_acc, float* dbeta_acc, size_t rows,
                  size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    float* dr = dx + r * cols;
    const __m512 vmu = _mm512_set1_ps(mean[r]), vrs = _mm512_set1_ps(rstd[r]);
    __m512 ta = _mm512_setzero_ps(), tb = ta;
    for (size_t b = 0; b < cols; b += kBlock) {
      const size_t e = b + kBlock < cols ? b + kBlock : cols;
      __m512 sa = _mm512_setzero_ps(), sb = sa;
      for (size_t i = b; i < e; i += kLanes) {
        __mmask16 k = tail_mask(e - i);
        __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + i), vmu), vrs);
        __m512 d = _mm512_maskz_loadu_ps(k, gr + i);
        __m512 g = _mm512_mul_ps(d, _mm512_maskz_loadu_ps(k, gamma + i));
        sa = _mm512_add_ps(sa, g);
        sb = _mm512_fmadd_ps(g, _mm512_maskz_mov_ps(k, xhat), sb);
        _mm512_mask_storeu_ps(dgamma_acc + i, k, _mm512_fmadd_ps(d, xhat, _mm512_maskz_loadu_ps(k, dgamma_acc + i)));
        _mm512_mask_storeu_ps(dbeta_acc + i, k, _mm512_add_ps(d, _mm512_maskz_loadu_ps(k, dbeta_acc + i)));
      }
      ta = _mm512_add_ps(ta, sa);
      tb = _mm512_add_ps(tb, sb);
    }
    const float inv = 1.0f / static_cast<float>(cols);
    const __m512 ma = _mm512_set1_ps(v512::hsum(ta) * inv), mb = _mm512_set1_ps(v512::hsum(tb) * inv);
    for (size_t i = 0; i < cols; i += kLanes) {
      __mmask16 k = tail_mask(cols - i);
      __m512 xhat = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, xr + i), vmu), vrs);
      __m512 g = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, gr + i), _mm512_maskz_loadu_ps(k, gamma + i));
      __m512 v = _mm512_mul_ps(vrs, _mm512_sub_ps(_mm512_sub_ps(g, ma), _mm512_mul_ps(xhat, mb)));
      _mm512_mask_storeu_ps(dr + i, k, v);
    }
  }
}

const LayerNormFns k512 = {forward_512, backward_512};
}  // namespace

const LayerNormFns* layernorm_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
