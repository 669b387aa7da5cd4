// Internal: the portable blocked GEMM driver and the contract of the per-ISA micro-kernels
// (kernels/README.md, "GEMM", explains the why). Not installed API: gemm.h is.
//
//   const GemmKernel* k = gemm_kernel_avx512_bf16();   // nullptr when not compiled in
//   if (k) gemm_blocked(desc, A, B, C, *k);            // desc already validated
//
// The driver owns blocking (NC/KC/MC loops), packing and threading; a rung supplies an MR x NR
// micro-kernel and (optionally) vectorized packers.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/kernels/gemm.h>

#include <xmmintrin.h>

#include <cstdint>

namespace tessera::kernels {

enum class GemmAct : uint8_t { none, relu, gelu };

// One operand as packing sees it: element (x, k) of op(A) (x = row i) or of op(B) (x = column
// j) is at data + x * sx + k * sk (in elements). One of sx, sk is 1.
struct GemmOperand {
  const void* data = nullptr;
  DType type = DType::f32;
  Cfp8Format fmt;  // when type is cfp8
  int64_t sx = 0, sk = 0;
};

// Packs x in [x0, x0+nx) and k in [k0, k0+kc) of `op` into ceil(nx / w) micro-panels of width
// w. Panel p starts at element p * w * ksteps * kpack of dst, ksteps = ceil(kc / kpack). Within
// a panel, step s holds for each of the w rows the kpack consecutive k (2s, 2s+1 for kpack 2).
// kpack 1 packs f32, kpack 2 packs bf16 (exact for bf16 and cfp8 sources). Rows past nx and k
// past kc are written as zeros. dst is 64-byte aligned.
using GemmPackFn = void (*)(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0,
                            int64_t kc, int w, void* dst);

// What the micro-kernel does with the MR x NR product P of one A and one B micro-panel, for the
// m x n corner of it that is real (1 <= m <= MR, 1 <= n <= NR):
//   out = act(alpha * P + prior_scale * prior + bias)
// `prior` (f32 or bf16, ld_prior) is skipped when nullptr and is then never read; bias is
// skipped when nullptr. out may equal prior (in place). Only the m x n corner is read or
// written. Which pointers the driver passes for each K block is in gemm_driver.cc.
struct GemmTile {
  float alpha = 1.f;
  float prior_scale = 0.f;
  const void* prior = nullptr;
  int64_t ld_prior = 0;
  bool prior_bf16 = false;
  const float* bias = nullptr;  // at column j0 of the tile
  GemmAct act = GemmAct::none;
  void* out = nullptr;
  int64_t ld_out = 0;
  bool out_bf16 = false;
};

// a: A micro-panel (MR rows, `ksteps` steps), b: B micro-panel (NR columns), both as packed by
// GemmPackFn with w = MR / NR.
using GemmUkernelFn = void (*)(int64_t ksteps, const void* a, const void* b, int m, int n,
                               const GemmTile& t);

struct GemmBlocking {
  int64_t mc = 0, kc = 0, nc = 0;  // the driver rounds kc to kpack, mc to MR, nc to NR
};

struct GemmKernel {
  const char* name;
  int mr, nr;
  int kpack;  // 1: f32 panels, f32 FMA; 2: bf16 k-pair panels (vdpbf16ps)
  GemmBlocking blocking;
  GemmUkernelFn ukernel;
  GemmPackFn pack;
  int lanes = 1;  // columns per vector: threads split N at this granularity, not at NR
};

// bf16 / cfp8 operands: denormals are zero and denormal results flush, on every path. That is
// what vdpbf16ps does by itself; setting it in MXCSR gives the f32 FMA path (bf16 widened to
// f32) the same results, and spares it the microcode assists that denormal operands would
// cost (50x slower on the machine this was tuned on). f32 GEMM keeps IEEE denormals.
class ScopedFlushDenormals {  // also used by the direct convolution (conv2d_direct.h)
 public:
  explicit ScopedFlushDenormals(bool on) : on_(on) {
    if (on_) {
      saved_ = _mm_getcsr();
      _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) | DAZ (bit 6)
    }
  }
  ~ScopedFlushDenormals() {
    if (on_) _mm_setcsr(saved_);
  }
  ScopedFlushDenormals(const ScopedFlushDenormals&) = delete;
  ScopedFlushDenormals& operator=(const ScopedFlushDenormals&) = delete;

 private:
  bool on_;
  unsigned saved_ = 0;
};

// Per-rung kernels; nullptr where the rung was not compiled in.
const GemmKernel* gemm_kernel_avx512_bf16();
const GemmKernel* gemm_kernel_avx512();
const GemmKernel* gemm_kernel_avx2();

// Runs a validated descriptor through `k` (any M, N, K including 0).
void gemm_blocked(const GemmDesc& d, const void* A, const void* B, void* C, const GemmKernel& k);

// Portable packers (any source type): the fallback the vectorized ones defer to.
void gemm_pack_generic_f32(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0, int64_t kc,
                           int w, void* dst);
void gemm_pack_generic_bf16(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0,
                            int64_t kc, int w, void* dst);

// cfp8 packing with AVX512_VBMI byte-table decodes (gemm_pack_cfp8_vbmi.cc): whether it is
// used (compiled in, the CPU has VBMI, and GemmTuning::cfp8_vbmi does not forbid it), and the
// packer itself (kpack 1 or 2; cfp8 operands only), which the AVX-512 packers defer to.
bool gemm_cfp8_vbmi();
void gemm_pack512_cfp8_vbmi(int kpack, const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0,
                            int64_t kc, int w, void* dst);

// Exact bf16 bits of all 256 codes of a cfp8 format (bias already resolved).
const uint16_t* gemm_cfp8_bf16_table(Cfp8Format f);

// The operands of a validated descriptor in driver form.
GemmOperand gemm_operand_a(const GemmDesc& d, const void* A);
GemmOperand gemm_operand_b(const GemmDesc& d, const void* B);
Cfp8Format gemm_cfp8_format(DType t, int bias);

// Multiply-add rate of vdpbf16ps over that of f32 FMA (zmm, register-only loops), measured
// once per process (< 1 ms); 0 when the avx512_bf16 rung is not compiled in or the CPU lacks
// it. Decides whether bf16 / cfp8 operands use vdpbf16ps or are widened to f32 for FMA.
double gemm_bf16_dot_speedup();
// vdpbf16ps is used for bf16 / cfp8 when its measured rate is at least this fraction of FMA's:
// where both are about equal the choice must not flip with measurement noise.
inline constexpr double kGemmDotMinSpeedup = 0.75;

// Tests and benchmarks: override blocking and threading (0 / -1 = the kernel's defaults).
// Process-wide; change only while no gemm is running.
struct GemmTuning {
  int64_t mc = 0, kc = 0, nc = 0;
  int64_t min_parallel_flops = -1;  // below this, one thread
  int threads = 0;                  // tasks to split into; 0 = the arena's concurrency
  int bf16_dot = -1;  // bf16 / cfp8 on vdpbf16ps: 1 force, 0 never, -1 env TESSERA_GEMM_BF16
  int cfp8_vbmi = -1;  // cfp8 packing with VBMI byte permutes: 0 never, else where the CPU has it
};
void gemm_set_tuning(const GemmTuning& t);
GemmTuning gemm_tuning();

}  // namespace tessera::kernels
