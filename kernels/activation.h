// Activation functions and their gradients on contiguous f32 buffers.
//
//   kernels::relu(x, y, n);                      // y = max(x, 0)
//   kernels::relu_backward(x, dy, dx, n);        // dx = dy where x > 0, else 0
//   kernels::gelu(x, y, n);                      // y = x Phi(x), exact erf form
//   kernels::gelu_backward(x, dy, dx, n);        // dx = dy (Phi(x) + x phi(x))
//
// GELU is the exact form 0.5 x (1 + erf(x / sqrt 2)) = x Phi(x), PyTorch's default
// (approximate="none"), not the tanh approximation. Phi is evaluated as erfc(-x/sqrt2)/2, so
// it stays relatively accurate in the negative tail where 1 + erf(.) would cancel: the vector
// rungs are within ~1e-6 relative of the exact value wherever it is a normal float (the AVX2
// rung flushes results below 2^-126 to 0). phi(x) = exp(-x^2/2)/sqrt(2 pi).
//
// Special values: relu(NaN) = NaN and relu(-0) = -0 (like x < 0 ? 0 : x); relu_backward
// selects, so dx = 0 where x <= 0 or x is NaN even if dy is NaN. gelu(+inf) = +inf,
// gelu(-inf) = NaN (x * 0, as PyTorch's formula gives), gelu_backward is 1 at +inf and 0 at -inf.
//
// In place allowed: y == x; dx == dy or dx == x. Pointers may be null only when n == 0. Inputs
// larger than kChunkElems are split over oneTBB worker threads.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels {

void relu(const float* x, float* y, size_t n);
void relu_backward(const float* x, const float* dy, float* dx, size_t n);
void gelu(const float* x, float* y, size_t n);
void gelu_backward(const float* x, const float* dy, float* dx, size_t n);
// y = erf(x): the vectorized erf behind GELU, absolute error < 1e-6 against std::erf. In place
// allowed.
void erf_elementwise(const float* x, float* y, size_t n);

// bf16 inputs (raw bit patterns), f32 outputs: y = relu(x) / gelu(x) of the exactly widened x,
// the same bits as widening first and calling the f32 function. x and y must not overlap.
void relu_bf16(const uint16_t* x, float* y, size_t n);
void gelu_bf16(const uint16_t* x, float* y, size_t n);

// One rung's single-threaded implementations; the public functions chunk and dispatch.
struct ActivationFns {
  void (*relu)(const float* x, float* y, size_t n);
  void (*relu_backward)(const float* x, const float* dy, float* dx, size_t n);
  void (*gelu)(const float* x, float* y, size_t n);
  void (*gelu_backward)(const float* x, const float* dy, float* dx, size_t n);
  void (*erf)(const float* x, float* y, size_t n);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const ActivationFns* activation_fns_scalar();
const ActivationFns* activation_fns_avx2();
const ActivationFns* activation_fns_avx512();
const ActivationFns& activation_fns();
const char* activation_impl_name();

}  // namespace tessera::kernels
