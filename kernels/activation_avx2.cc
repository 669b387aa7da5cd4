// AVX2 activations, 8 lanes; the twin of activation_avx512.cc with vmaskmov tails.
#include <tessera/kernels/activation.h>
#include <tessera/kernels/vec_math_avx2.h>

namespace tessera::kernels {
namespace {

using v256::kLanes;

template <typename Op>
inline void unary(const float* x, float* y, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) _mm256_storeu_ps(y + i, op(_mm256_loadu_ps(x + i)));
  if (i < n) v256::store_tail(y + i, n - i, op(v256::load_tail(x + i, n - i)));
}
template <typename Op>
inline void binary(const float* x, const float* dy, float* dx, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(dx + i, op(_mm256_loadu_ps(x + i), _mm256_loadu_ps(dy + i)));
  }
  if (i < n) {
    v256::store_tail(dx + i, n - i, op(v256::load_tail(x + i, n - i), v256::load_tail(dy + i, n - i)));
  }
}

void relu_256(const float* x, float* y, size_t n) {
  unary(x, y, n, [](__m256 v) { return _mm256_max_ps(_mm256_setzero_ps(), v); });
}
void relu_backward_256(const float* x, const float* dy, float* dx, size_t n) {
  binary(x, dy, dx, n, [](__m256 v, __m256 g) {
    return _mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ), g);
  });
}
void gelu_256(const float* x, float* y, size_t n) {
  unary(x, y, n, [](__m256 v) { return _mm256_mul_ps(v, v256::normal_cdf(v)); });
}
void gelu_backward_256(const float* x, const float* dy, float* dx, size_t n) {
  binary(x, dy, dx, n, [](__m256 v, __m256 g) {
    __m256 pdf;
    __m256 cdf = v256::normal_cdf(v, &pdf);
    __m256 vc = _mm256_max_ps(_mm256_set1_ps(-15.0f), _mm256_min_ps(_mm256_set1_ps(15.0f), v));
    return _mm256_mul_ps(g, _mm256_fmadd_ps(vc, pdf, cdf));
  });
}
void erf_256(const float* x, float* y, size_t n) { unary(x, y, n, [](__m256 v) { return v256::erf(v); }); }

const ActivationFns k256 = {relu_256, relu_backward_256, gelu_256, gelu_backward_256, erf_256};
}  // namespace

const ActivationFns* activation_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
