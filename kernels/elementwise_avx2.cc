// AVX2 elementwise arithmetic, 8 lanes; the tail is one masked iteration (vmaskmov). Loads of a
// vector happen before its store, so in-place calls are safe.
#include <tessera/kernels/elementwise.h>
#include <tessera/kernels/vec_math_avx2.h>

namespace tessera::kernels {
namespace {

using v256::kLanes;

template <typename Op>
inline void binary(const float* a, const float* b, float* y, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm256_storeu_ps(y + i, op(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  }
  if (i < n) {
    v256::store_tail(y + i, n - i, op(v256::load_tail(a + i, n - i), v256::load_tail(b + i, n - i)));
  }
}

void add_256(const float* a, const float* b, float* y, size_t n) {
  binary(a, b, y, n, [](__m256 u, __m256 v) { return _mm256_add_ps(u, v); });
}
void mul_256(const float* a, const float* b, float* y, size_t n) {
  binary(a, b, y, n, [](__m256 u, __m256 v) { return _mm256_mul_ps(u, v); });
}
void scale_256(float alpha, const float* x, float* y, size_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  binary(x, x, y, n, [va](__m256 u, __m256) { return _mm256_mul_ps(va, u); });
}
void axpy_256(float alpha, const float* x, float* y, size_t n) {
  const __m256 va = _mm256_set1_ps(alpha);
  binary(x, y, y, n, [va](__m256 u, __m256 v) { return _mm256_fmadd_ps(va, u, v); });
}
void bias_add_256(const float* x, const float* b, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) add_256(x + r * cols, b, y + r * cols, cols);
}

const ElementwiseFns k256 = {add_256, mul_256, scale_256, axpy_256, bias_add_256};
}  // namespace

const ElementwiseFns* elementwise_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
