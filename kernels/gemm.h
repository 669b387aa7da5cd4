// GEMM on raw row-major buffers: f32, bf16 and cfp8 inputs, f32 accumulation, f32 or bf16 out.
//
//   // y[64x512] = gelu(x[64x784] * w[784x512] + b), bf16 operands, f32 output
//   kernels::GemmDesc d;
//   d.M = 64; d.N = 512; d.K = 784;
//   d.a_type = d.b_type = DType::bf16;
//   d.epilogue = kernels::Epilogue::bias_gelu;
//   d.bias = b.data();
//   kernels::gemm(d, x.data(), w.data(), y.data());
//
//   // weight gradient dW[784x512] = x^T * dy: x is stored 64x784, so trans_a
//   d = {}; d.M = 784; d.N = 512; d.K = 64; d.trans_a = true; ...
//
// Semantics: C[MxN] = epilogue(alpha * op(A) * op(B) + beta * C), row-major.
//  - op(A) is MxK: A is stored MxK (lda >= K) or, with trans_a, KxM (lda >= M). op(B) is KxN:
//    stored KxN (ldb >= N) or, with trans_b, NxK (ldb >= K). ld = 0 means tight.
//  - Operand types: f32 x f32, or any mix of bf16, cfp8_e4m3 and cfp8_e5m2 (cfp8 x cfp8,
//    cfp8 x bf16, ...). cfp8 operands carry their exponent bias in a_bias / b_bias (-1: the
//    layout default, 7 for e4m3, 15 for e5m2). f32 mixed with a narrow type is a TypeError:
//    convert first, so that the rounding is explicit.
//  - Products are accumulated in f32. With bf16/cfp8 operands, denormals count as zero and
//    denormal results flush to zero (inputs, partial sums, C and bias in the epilogue), on
//    every path: vdpbf16ps behaves so by itself, and the f32 FMA path runs with MXCSR FTZ|DAZ
//    for the call. No cfp8 value is a bf16 denormal. f32 GEMM keeps IEEE denormals. The
//    scalar reference never flushes.
//  - beta == 0 never reads C (C may hold NaN). The bias (f32, length N, added to every row) and
//    the activation are applied after alpha and beta. gelu is the exact erf form
//    0.5 x (1 + erf(x / sqrt 2)) (PyTorch's default), vectorized to within 1e-6 absolute in erf.
//  - bf16 output rounds to nearest even exactly like core/bf16.h (intermediate sums over K
//    stay in f32).
//  - M, N or K may be 0; K == 0 gives C = epilogue(beta * C).
//  - Which kernel runs (gemm_impl_name): f32 uses f32 FMA. bf16 / cfp8 use vdpbf16ps on
//    AVX512_BF16 CPUs where it is not slower than f32 FMA (measured once per process), and are
//    otherwise widened to f32 while packing and run on FMA (on the Xeon this was tuned on,
//    vdpbf16ps runs at half the FMA rate). TESSERA_GEMM_BF16=dot|fma|auto overrides the choice.
//  - C must not overlap A or B. Calls are thread-safe; a call uses the oneTBB arena it is made
//    from (tbb::task_arena limits its threads) and returns when C is complete.
// Bad descriptors throw ValueError (sizes, leading dimensions, biases, a missing bias or data
// pointer) or TypeError (dtypes), naming the offending values.
#pragma once

#include <tessera/core/dtype.h>

#include <cstdint>

namespace tessera::kernels {

enum class Epilogue { none, bias, relu, gelu, bias_relu, bias_gelu };
const char* epilogue_name(Epilogue e);

struct GemmDesc {
  int64_t M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  DType a_type = DType::f32, b_type = DType::f32;  // f32, bf16, cfp8_e4m3, cfp8_e5m2
  int a_bias = -1, b_bias = -1;                    // cfp8 exponent bias; -1 = layout default
  DType c_type = DType::f32;                       // f32 or bf16 output
  int64_t lda = 0, ldb = 0, ldc = 0;               // 0 = tight (width of the stored matrix)
  float alpha = 1.f, beta = 0.f;
  Epilogue epilogue = Epilogue::none;
  const float* bias = nullptr;  // length N when the epilogue has a bias
};

void gemm(const GemmDesc& d, const void* A, const void* B, void* C);

// The scalar reference, always built: the test oracle and the last dispatch entry. Decodes
// both operands to f32, accumulates in f32 in k order.
void gemm_reference(const GemmDesc& d, const void* A, const void* B, void* C);

// Which implementation gemm() picks for `d` right now ("avx512_bf16", "avx512", "avx2",
// "reference"); depends on the CPU, the build and the ISA cap (cpu.h).
const char* gemm_impl_name(const GemmDesc& d);

// Whether cfp8 operands pack as fast as bf16 ones on this CPU and ISA cap (AVX512_VBMI byte-table
// decodes at an AVX-512 rung): the precision policy then hands the GEMM cfp8 codes, a byte per
// element, instead of bf16 copies of the same values.
bool gemm_cfp8_packs_fast();

// Throws as gemm() would for a bad descriptor; gemm() calls it. Pointers are not checked here.
void gemm_validate(const GemmDesc& d);

}  // namespace tessera::kernels
