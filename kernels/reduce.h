// Reductions over f32 buffers: sums along one axis, the sum of squares (global-norm gradient
// clipping) and the absolute maximum (cfp8 bias selection).
//
//   kernels::sum_axis(x, y, rows, cols, 1);       // row sums:    y[r] = sum_c x[r, c]
//   kernels::sum_axis(x, y, 1, rows, cols);       // column sums: y[c] = sum_r x[r, c]
//   kernels::sum_axis(x, y, b, t, d);             // [b, t, d] -> [b, d], summing t
//   float total = kernels::sum(x, n);
//   float norm = std::sqrt(kernels::sum_squares(g, n));
//   float m = kernels::amax(w, n);                // NaN if any element is NaN
//
// Accuracy: every sum accumulates in f32 pairwise (blocks of at most a few hundred terms are
// summed directly, blocks are combined in a binary tree), so the error grows like log(n), not n;
// a million ones sum to exactly 1e6. Large inputs are split into fixed chunks whose f32 partials
// are combined in double; chunking depends only on the shape, so results are the same bits on
// every run and thread count. Inf and NaN propagate as IEEE addition says.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>

namespace tessera::kernels {

// x viewed as a row-major [outer x axis x inner] array; y[o, i] = sum over a of x[o, a, i], so y
// is [outer x inner] (overwritten). axis == 0 writes zeros. x and y must not overlap.
void sum_axis(const float* x, float* y, size_t outer, size_t axis, size_t inner);
// Sum of x[0..n); 0 for n == 0.
float sum(const float* x, size_t n);
// Sum of x[i]^2; 0 for n == 0.
float sum_squares(const float* x, size_t n);
// max |x[i]|; 0 for n == 0; NaN if any x[i] is NaN; +inf if any is +-inf (and none is NaN).
float amax(const float* x, size_t n);

// One rung's single-threaded implementations; the public functions chunk and dispatch.
struct ReduceFns {
  // y[i] = sum over a < axis of x[a * ld + i], for i < width (width <= ld). ld == width == 1
  // is a contiguous sum. axis >= 1.
  void (*sum_strided)(const float* x, float* y, size_t axis, size_t width, size_t ld);
  float (*sum_squares)(const float* x, size_t n);
  // Returns NaN if any element is NaN.
  float (*amax)(const float* x, size_t n);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const ReduceFns* reduce_fns_scalar();
const ReduceFns* reduce_fns_avx2();
const ReduceFns* reduce_fns_avx512();
const ReduceFns& reduce_fns();
const char* reduce_impl_name();

}  // namespace tessera::kernels
