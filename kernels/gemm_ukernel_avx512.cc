// avx512 rung: f32 FMA micro-kernel. f32 GEMMs at every AVX-512 level (f32 stays f32: no
// rounding of inputs to bf16), and bf16 / cfp8 operands when AVX512_BF16 is absent or capped
// (widened to f32 while packing, exact).
//
// 8 x 48 tile: 24 zmm accumulators, 3 B vectors, 1 broadcast; per k: 3 loads + 8 broadcasts
// for 24 FMAs.
#include <tessera/kernels/gemm_pack_avx512.h>
#include <tessera/kernels/gemm_ukernel_avx512.h>

namespace tessera::kernels {
namespace {

struct FmaF32 {
  static __m512 madd(__m512 acc, __m512i a, __m512i b) {
    return _mm512_fmadd_ps(_mm512_castsi512_ps(a), _mm512_castsi512_ps(b), acc);
  }
};

constexpr int kMR = 8, kNR = 48;
// KC = 256 (a 48 KB B micro-panel, as large as L1: the part that does not fit streams from L2
// well) halves the per-tile epilogue cost of KC = 128 and measured 3-5% faster. NC = 1024
// keeps the packed B block (1 MB) in L2 between packing and use, which matters when M is
// small and every packed element is used only M times (64 x 4096 x 1024: +20%).
const GemmKernel kKernel = {"avx512", kMR, kNR, 1, {512, 256, 1024},
                            &GemmUkernelTable512<FmaF32, kMR, kNR>::run, &gemm_pack512<1>, 16};

}  // namespace

const GemmKernel* gemm_kernel_avx512() { return &kKernel; }

}  // namespace tessera::kernels
