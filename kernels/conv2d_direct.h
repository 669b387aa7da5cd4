// Internal: direct (register-blocked implicit GEMM) convolution on prepared f32 buffers, the
// fast path of conv2d.cc where the GEMM would run f32 FMA anyway (f32, and bf16 / cfp8 on CPUs
// whose vdpbf16ps is slower than FMA). Not installed API: conv2d.h is.
//
// conv2d.cc prepares, per chunk of images, a zero-padded copy of the input whose values are
// already rounded to the compute type (so the kernels never test bounds and never round), and
// the weights rounded once per call. The kernels then broadcast input elements straight from
// that copy into an ROWS x (16 * NV) register tile of FMAs: no unfolded column buffer, no
// packing.
//
//   forward-shaped (forward, and stride-1 backward-data as a forward conv of the padded dy
//   with flipped, transposed weights): rows = output pixels, columns = output channels,
//   reduction over (r, s, c);
//   weight gradient: rows = (r, s, c) filter taps, columns = output channels, reduction over
//   output pixels.
#pragma once

#include <tessera/kernels/gemm_driver.h>

#include <cstdint>

namespace tessera::kernels {

// One chunk of images, already padded: image n, padded row i, column j, channel c is at
// xp[((n * Hp + i) * Wp + j) * C + c]; output pixel (oh, ow), tap (r, s) reads padded position
// (oh * stride_h + r * dil_h, ow * stride_w + s * dil_w).
struct DirectInput {
  const float* xp = nullptr;
  int64_t images = 0, Hp = 0, Wp = 0, C = 0;
  int64_t OH = 0, OW = 0, R = 1, S = 1;
  int64_t stride_h = 1, stride_w = 1, dil_h = 1, dil_w = 1;
  bool flush_denormals = false;  // bf16 / cfp8 compute: FTZ + DAZ, as the GEMM does
};

// y[n, oh, ow, k] = act(sum_{r,s,c} x(n, oh, ow, r, s, c) * w[r, s, c, k] + bias[k]).
// w is [R, S, C, K]; bias may be null; y is [images, OH, OW, K], overwritten.
struct DirectForward {
  DirectInput in;
  const float* w = nullptr;
  int64_t K = 0;
  const float* bias = nullptr;
  GemmAct act = GemmAct::none;
  float* y = nullptr;
};

// acc[p][(r * S + s) * C + c, k] += sum over the pixels of part p of x(pixel, r, s, c) * dy[pixel, k].
// The chunk's pixels (images * OH * OW) are cut into `parts` equal ranges in order; part p
// adds into acc[p] ([R*S*C, K] f32), so the sum does not depend on the thread count.
struct DirectWeightGrad {
  DirectInput in;
  const float* dy = nullptr;  // [images, OH, OW, K]
  int64_t K = 0;
  float* const* acc = nullptr;
  int parts = 1;
  // bf16 or cfp8: dy is unrounded f32, rounded to this type (cfp8 in dy_fmt) as it is loaded
  // (worth it when the filter has few taps, so each dy element is loaded once or twice;
  // otherwise conv2d.cc rounds dy beforehand and passes f32 here).
  DType round_dy = DType::f32;
  Cfp8Format dy_fmt;
  // Optional bias gradient, fused: per part, K accumulators that gain the sum of dy over the
  // part's pixels, read block by block while the block is still in cache (dy as given: pass
  // unrounded dy when the bias gradient must be of unrounded values).
  float* const* dbias = nullptr;
};

struct Conv2dDirectFns {
  void (*forward)(const DirectForward&);
  void (*weight_grad)(const DirectWeightGrad&);
};

// nullptr when the avx512 rung was not compiled in.
const Conv2dDirectFns* conv2d_direct_avx512();

}  // namespace tessera::kernels
