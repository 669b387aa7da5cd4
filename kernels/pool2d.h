// 2-D max and average pooling, NHWC f32, forward and backward.
//
//   Pool2dDesc p;  p.N = 64; p.H = p.W = 28; p.C = 32; p.R = p.S = 2; p.stride_h = p.stride_w = 2;
//   maxpool2d_forward(p, x, y, argmax);     // argmax [N,OH,OW,C]: ih * W + iw of each maximum
//   maxpool2d_backward(p, dy, argmax, dx);  // dx zeroed, then dy added at each argmax
//   avgpool2d_forward(p, x, y);             // padding counts in the divisor (PyTorch default)
//
// Max pooling propagates NaN (a NaN in a window is its maximum, as in PyTorch); ties keep the
// first maximum in window order. The inner loops run over contiguous channels, vectorized by the
// compiler once per ISA rung (scalar, avx512; pool2d_loops.h), chosen by dispatch.h's select();
// images x output rows (forward) or images (backward) are split over oneTBB. The backward of max
// pooling writes each position once when the windows tile the input (stride == window, no
// padding). Bad descriptors throw ValueError.
#pragma once

#include <cstdint>

namespace tessera::kernels {

struct Pool2dDesc {
  int64_t N = 0, H = 0, W = 0, C = 0;
  int64_t R = 2, S = 2;
  int64_t stride_h = 2, stride_w = 2, pad_h = 0, pad_w = 0;
  int64_t OH() const { return (H + 2 * pad_h - R) / stride_h + 1; }
  int64_t OW() const { return (W + 2 * pad_w - S) / stride_w + 1; }
};

void pool2d_validate(const Pool2dDesc& p);

// One rung's loops: a forward output row (n, oh), a backward image n (dx of that image written).
struct Pool2dFns {
  // amax (may be null): raised to the largest |output| written (NaN if any is NaN).
  void (*maxpool_forward_row)(const Pool2dDesc&, const float* x, float* y, int32_t* argmax, int64_t n, int64_t oh,
                              float* amax);
  void (*maxpool_backward_image)(const Pool2dDesc&, const float* dy, const int32_t* argmax, float* dx,
                                 const float* relu_mask, int64_t n, float* amax);
  void (*avgpool_forward_row)(const Pool2dDesc&, const float* x, float* y, int64_t n, int64_t oh);
  void (*avgpool_backward_image)(const Pool2dDesc&, const float* dy, float* dx, int64_t n);
};
// Per-rung tables (nullptr where the rung was not compiled in), and the dispatched one.
const Pool2dFns* pool2d_fns_scalar();
const Pool2dFns* pool2d_fns_avx512();
const Pool2dFns& pool2d_fns();
const char* pool2d_impl_name();
// With `amax` (both max-pool passes): *amax = the largest |output| (NaN if any output is NaN),
// taken in the loops that write it: what the cfp8 precision
// policy needs of a tensor before it encodes it, without a pass of its own over memory.
void maxpool2d_forward(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax, float* amax = nullptr);
// With relu_mask (the shape of dx): dx where relu_mask > 0, else 0 — relu_backward(relu_mask, dx)
// in the same pass (the executor fuses relu_grad after maxpool2d_grad).
void maxpool2d_backward(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx,
                        const float* relu_mask = nullptr, float* amax = nullptr);
void avgpool2d_forward(const Pool2dDesc& p, const float* x, float* y);
void avgpool2d_backward(const Pool2dDesc& p, const float* dy, float* dx);

}  // namespace tessera::kernels
