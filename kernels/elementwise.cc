#include <tessera/kernels/elementwise.h>

#include <tessera/kernels/convert.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>
#include <tessera/kernels/reduce.h>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const ElementwiseFns* elementwise_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const ElementwiseFns* elementwise_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<ElementwiseFns>& pick() {
  static const Impl<ElementwiseFns> kList[] = {
      {"avx512", Isa::avx512, elementwise_fns_avx512()},
      {"avx2", Isa::avx2, elementwise_fns_avx2()},
      {"scalar", Isa::scalar, elementwise_fns_scalar()},
  };
  return select("elementwise", kList);
}
}  // namespace

const ElementwiseFns& elementwise_fns() { return *pick().fns; }
const char* elementwise_impl_name() { return pick().name; }

void add(const float* a, const float* b, float* y, size_t n) {
  auto f = elementwise_fns().add;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) { f(a + i, b + i, y + i, j - i); });
}

void mul(const float* a, const float* b, float* y, size_t n) {
  auto f = elementwise_fns().mul;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) { f(a + i, b + i, y + i, j - i); });
}

void scale(float alpha, const float* x, float* y, size_t n) {
  auto f = elementwise_fns().scale;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) { f(alpha, x + i, y + i, j - i); });
}

void axpy(float alpha, const float* x, float* y, size_t n) {
  auto f = elementwise_fns().axpy;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) { f(alpha, x + i, y + i, j - i); });
}

void bias_add(const float* x, const float* b, float* y, size_t rows, size_t cols) {
  if (cols == 0) return;
  auto f = elementwise_fns().bias_add;
  for_each_chunk(rows, units_per_chunk(cols), [&](size_t r0, size_t r1) {
    f(x + r0 * cols, b, y + r0 * cols, r1 - r0, cols);
  });
}

void bias_add_bf16(const uint16_t* x, const float* b, float* y, size_t rows, size_t cols) {
  if (cols == 0) return;
  auto f = elementwise_fns().bias_add;
  auto widen = convert_fns().bf16_to_f32;
  for_each_chunk(rows, units_per_chunk(cols), [&](size_t r0, size_t r1) {
    widen(x + r0 * cols, y + r0 * cols, (r1 - r0) * cols);
    f(y + r0 * cols, b, y + r0 * cols, r1 - r0, cols);
  });
}

void bias_grad(const float* dy, float* db, size_t rows, size_t cols) {
  sum_axis(dy, db, 1, rows, cols);
}

}  // namespace tessera::kernels
