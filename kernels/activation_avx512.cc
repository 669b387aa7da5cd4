// AVX-512 activations, 16 lanes; the tail is one masked iteration. GELU uses the erfc-based
// normal CDF of vec_math_avx512.h.
#include <tessera/kernels/activation.h>
#include <tessera/kernels/vec_math_avx512.h>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

template <typename Op>
inline void unary(const float* x, float* y, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm512_storeu_ps(y + i, op(_mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, op(_mm512_maskz_loadu_ps(m, x + i)));
  }
}
template <typename Op>
inline void binary(const float* x, const float* dy, float* dx, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(dx + i, op(_mm512_loadu_ps(x + i), _mm512_loadu_ps(dy + i)));
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(dx + i, m, op(_mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, dy + i)));
  }
}

void relu_512(const float* x, float* y, size_t n) {
  // max(0, x) returns x when x is NaN or -0, like the reference x < 0 ? 0 : x.
  unary(x, y, n, [](__m512 v) { return _mm512_max_ps(_mm512_setzero_ps(), v); });
}
void relu_backward_512(const float* x, const float* dy, float* dx, size_t n) {
  binary(x, dy, dx, n, [](__m512 v, __m512 g) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ), g);
  });
}
void gelu_512(const float* x, float* y, size_t n) {
  unary(x, y, n, [](__m512 v) { return _mm512_mul_ps(v, v512::normal_cdf(v)); });
}
void gelu_backward_512(const float* x, const float* dy, float* dx, size_t n) {
  binary(x, dy, dx, n, [](__m512 v, __m512 g) {
    __m512 pdf;
    __m512 cdf = v512::normal_cdf(v, &pdf);
    // pdf is 0 beyond |x| = 15; clamping x there keeps inf * 0 out (NaN still propagates).
    __m512 vc = _mm512_max_ps(_mm512_set1_ps(-15.0f), _mm512_min_ps(_mm512_set1_ps(15.0f), v));
    return _mm512_mul_ps(g, _mm512_fmadd_ps(vc, pdf, cdf));
  });
}
void erf_512(const float* x, float* y, size_t n) { unary(x, y, n, [](__m512 v) { return v512::erf(v); }); }

const ActivationFns k512 = {relu_512, relu_backward_512, gelu_512, gelu_backward_512, erf_512};
}  // namespace

const ActivationFns* activation_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
