// Elementwise f32 arithmetic on contiguous raw buffers: add, mul, scale, axpy, and the bias add
// of a linear layer with its gradient.
//
//   kernels::add(a, b, y, n);                  // y = a + b
//   kernels::axpy(-lr, grad, w, n);            // w += -lr * grad
//   kernels::bias_add(x, b, y, rows, cols);    // y[r, c] = x[r, c] + b[c]
//   kernels::bias_grad(dy, db, rows, cols);    // db[c] = sum_r dy[r, c]
//
// Shapes: flat arrays of n elements, or row-major [rows x cols] matrices with row stride cols.
// Pointers may be null only when the element count is 0. "In place" means the output pointer
// equals an input pointer; any other overlap between buffers is undefined. Results are IEEE f32
// (the vector rungs use FMA for axpy, so they may differ from the scalar rung in the last bit).
// Inputs larger than kChunkElems are split over oneTBB worker threads; all functions are
// thread-safe for disjoint outputs.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels {

// y = a + b. In place allowed (y == a and/or y == b).
void add(const float* a, const float* b, float* y, size_t n);
// y = a * b. In place allowed.
void mul(const float* a, const float* b, float* y, size_t n);
// y = alpha * x. In place allowed.
void scale(float alpha, const float* x, float* y, size_t n);
// y += alpha * x (BLAS saxpy, but alpha == 0 is not special-cased: NaN in x still propagates).
void axpy(float alpha, const float* x, float* y, size_t n);

// y[r, c] = x[r, c] + b[c] for x, y of [rows x cols] and b of [cols]. In place allowed (y == x).
void bias_add(const float* x, const float* b, float* y, size_t rows, size_t cols);
// bias_add with a bf16 x (raw bit patterns) and f32 b, y: the same bits as widening x first.
// x and y must not overlap.
void bias_add_bf16(const uint16_t* x, const float* b, float* y, size_t rows, size_t cols);
// db[c] = sum over r of dy[r, c] (overwrites db). Pairwise summation, see reduce.h.
void bias_grad(const float* dy, float* db, size_t rows, size_t cols);

// One rung's single-threaded implementations; the public functions above chunk and dispatch.
struct ElementwiseFns {
  void (*add)(const float* a, const float* b, float* y, size_t n);
  void (*mul)(const float* a, const float* b, float* y, size_t n);
  void (*scale)(float alpha, const float* x, float* y, size_t n);
  void (*axpy)(float alpha, const float* x, float* y, size_t n);
  void (*bias_add)(const float* x, const float* b, float* y, size_t rows, size_t cols);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const ElementwiseFns* elementwise_fns_scalar();
const ElementwiseFns* elementwise_fns_avx2();
const ElementwiseFns* elementwise_fns_avx512();
// The table dispatch picks for the current active_isa().
const ElementwiseFns& elementwise_fns();
const char* elementwise_impl_name();

}  // namespace tessera::kernels
