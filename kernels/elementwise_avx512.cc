// AVX-512 elementwise arithmetic, 16 lanes; the tail is one masked iteration. Loads of a vector
// happen before its store, so in-place calls are safe.
#include <tessera/kernels/elementwise.h>
#include <tessera/kernels/vec_math_avx512.h>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

// y[i] = op(a[i], b[i]) for 16 lanes at a time.
template <typename Op>
inline void binary(const float* a, const float* b, float* y, size_t n, Op op) {
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    _mm512_storeu_ps(y + i, op(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i)));
  }
  if (i < n) {
    __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, op(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i)));
  }
}

void add_512(const float* a, const float* b, float* y, size_t n) {
  binary(a, b, y, n, [](__m512 u, __m512 v) { return _mm512_add_ps(u, v); });
}
void mul_512(const float* a, const float* b, float* y, size_t n) {
  binary(a, b, y, n, [](__m512 u, __m512 v) { return _mm512_mul_ps(u, v); });
}
void scale_512(float alpha, const float* x, float* y, size_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  binary(x, x, y, n, [va](__m512 u, __m512) { return _mm512_mul_ps(va, u); });
}
void axpy_512(float alpha, const float* x, float* y, size_t n) {
  const __m512 va = _mm512_set1_ps(alpha);
  binary(x, y, y, n, [va](__m512 u, __m512 v) { return _mm512_fmadd_ps(va, u, v); });
}
void bias_add_512(const float* x, const float* b, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) add_512(x + r * cols, b, y + r * cols, cols);
}

const ElementwiseFns k512 = {add_512, mul_512, scale_512, axpy_512, bias_add_512};
}  // namespace

const ElementwiseFns* elementwise_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
