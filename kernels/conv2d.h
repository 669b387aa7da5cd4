// 2-D convolution, NHWC activations and RSCK ("HWIO") weights, as implicit GEMM: either direct
// register-blocked kernels on a padded copy of a chunk of images (conv2d_direct.h), or the GEMM
// micro-kernels (gemm.h) on the input unfolded (im2col) into a bounded workspace a chunk of
// output rows at a time; never a full-size unfolded copy of a large input.
//
//   Conv2dDesc d;  d.N = 64; d.H = d.W = 28; d.C = 1; d.K = 32; d.R = d.S = 3; d.pad_h = d.pad_w = 1;
//   conv2d_forward(d, x, w, bias, y);            // x [N,H,W,C], w [R,S,C,K], y [N,OH,OW,K] f32
//   conv2d_backward_data(d, dy, w, dx);          // dx [N,H,W,C]
//   conv2d_backward_weights(d, x, dy, dw, db);   // dw [R,S,C,K], db [K] (db may be null)
//
// As GEMMs, with M = N*OH*OW rows of output pixels and the RSC-long unfolded window per row:
//   forward   y[M, K]      = col[M, RSC] * w[RSC, K]        (+ bias, activation epilogue)
//   bwd data  dcol[M, RSC] = dy[M, K] * w^T, then col2im adds dcol into dx
//   bwd wei   dw[RSC, K]   = col^T * dy                      (accumulated over row chunks)
// All buffers are f32. `compute` selects the GEMM operand type: f32, bf16, or cfp8 (then
// x_fmt / w_fmt / dy_fmt give the layouts and biases): operands are rounded to it while
// unfolding or once per call (weights), and products accumulate in f32.
// Threading: unfolding and col2im run over oneTBB (col2im by image, so writes never collide);
// the GEMMs thread themselves. Bad descriptors throw ValueError naming the values.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>
#include <tessera/kernels/gemm.h>

#include <cstdint>

namespace tessera::kernels {

struct Conv2dDesc {
  int64_t N = 0, H = 0, W = 0, C = 0;  // input
  int64_t K = 0, R = 1, S = 1;         // output channels, filter height and width
  int64_t stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0, dil_h = 1, dil_w = 1;
  DType compute = DType::f32;  // f32, bf16, or cfp8 (cfp8_e4m3/cfp8_e5m2: see the formats)
  Cfp8Format x_fmt{Cfp8Layout::e4m3, 7}, w_fmt{Cfp8Layout::e4m3, 7}, dy_fmt{Cfp8Layout::e5m2, 15};

  int64_t OH() const { return (H + 2 * pad_h - dil_h * (R - 1) - 1) / stride_h + 1; }
  int64_t OW() const { return (W + 2 * pad_w - dil_w * (S - 1) - 1) / stride_w + 1; }
  double flops() const { return 2.0 * N * OH() * OW() * K * R * S * C; }
};

void conv2d_validate(const Conv2dDesc& d);

// bias (length K) may be null; epilogue is none, relu or gelu (applied after the bias).
void conv2d_forward(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y,
                    Epilogue epilogue = Epilogue::none);
void conv2d_backward_data(const Conv2dDesc& d, const float* dy, const float* w, float* dx);
void conv2d_backward_weights(const Conv2dDesc& d, const float* x, const float* dy, float* dw, float* dbias);

// Direct loops in double, the test oracle (operands are used as given: round them first to
// compare against a bf16/cfp8 run).
void conv2d_forward_reference(const Conv2dDesc& d, const float* x, const float* w, const float* bias, float* y);
void conv2d_backward_data_reference(const Conv2dDesc& d, const float* dy, const float* w, float* dx);
void conv2d_backward_weights_reference(const Conv2dDesc& d, const float* x, const float* dy, float* dw,
                                       float* dbias);

// Which algorithm runs a pass: "direct_avx512" (register-blocked direct convolution on a padded,
// pre-rounded copy of a chunk of images; used where the GEMM would run f32 FMA anyway: f32, and
// bf16 / cfp8 where vdpbf16ps is slower than FMA; backward data only with stride 1) or "gemm"
// (unfolded chunks + gemm()). TESSERA_CONV=auto|direct|gemm or set_conv2d_algorithm() override
// the choice (direct still falls back where it does not apply); TESSERA_VERBOSE=1 logs it.
enum class Conv2dPass { forward, backward_data, backward_weights };
enum class Conv2dAlgo { automatic, direct, gemm };
const char* conv2d_pass_name(Conv2dPass pass);
const char* conv2d_impl_name(const Conv2dDesc& d, Conv2dPass pass);
void set_conv2d_algorithm(Conv2dAlgo algo);  // process-wide; tests and benchmarks

// Workspace bound for the unfolded rows, in bytes (tests lower it to exercise chunking).
void set_conv2d_workspace_bytes(size_t bytes);
size_t conv2d_workspace_bytes();

}  // namespace tessera::kernels
