// The reference rung: plain loops, always built, the oracle in tests.
#include <tessera/kernels/elementwise.h>

namespace tessera::kernels {
namespace {

void add_ref(const float* a, const float* b, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}
void mul_ref(const float* a, const float* b, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = a[i] * b[i];
}
void scale_ref(float alpha, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}
void axpy_ref(float alpha, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
void bias_add_ref(const float* x, const float* b, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < cols; ++c) y[r * cols + c] = x[r * cols + c] + b[c];
  }
}

const ElementwiseFns kScalar = {add_ref, mul_ref, scale_ref, axpy_ref, bias_add_ref};
}  // namespace

const ElementwiseFns* elementwise_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
