// 2-D max and average pooling, NHWC f32, forward and backward.
//
//   Pool2dDesc p;  p.N = 64; p.H = p.W = 28; p.C = 32; p.R = p.S = 2; p.stride_h = p.stride_w = 2;
//   maxpool2d_forward(p, x, y, argmax);     // argmax [N,OH,OW,C]: ih * W + iw of each maximum
//   maxpool2d_backward(p, dy, argmax, dx);  // dx zeroed, then dy added at each argmax
//   avgpool2d_forward(p, x, y);             // padding counts in the divisor (PyTorch default)
//
// Max pooling propagates NaN (a NaN in a window is its maximum, as in PyTorch); ties keep the
// first maximum in window order. The inner loop runs over contiguous channels, vectorized by the
// compiler; images x output rows are split over oneTBB. Bad descriptors throw ValueError.
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
void maxpool2d_forward(const Pool2dDesc& p, const float* x, float* y, int32_t* argmax);
void maxpool2d_backward(const Pool2dDesc& p, const float* dy, const int32_t* argmax, float* dx);
void avgpool2d_forward(const Pool2dDesc& p, const float* x, float* y);
void avgpool2d_backward(const Pool2dDesc& p, const float* dy, float* dx);

}  // namespace tessera::kernels
