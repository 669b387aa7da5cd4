// avx512_bf16 rung: bf16 / cfp8 operands, vdpbf16ps on bf16 k-pairs, f32 accumulation.
//
// vdpbf16ps multiplies 16 pairs of bf16 and adds both products to 16 f32 lanes, so both
// panels hold k in pairs: B as [k-pair][column][2] (one zmm = 16 columns x 2 k), A as
// [k-pair][row][2] (one 32-bit pair broadcast per row). cfp8 is decoded to bf16 while packing
// (exact). An odd K pads the last pair with a zero in both panels.
//
// 8 x 48 tile: 24 zmm accumulators + 3 B vectors + 1 broadcast. Per k-pair: 3 vector loads and
// 8 broadcasts feed 24 vdpbf16ps, well within two loads per cycle. M = 64 is 8 row tiles with no
// waste; the 16-column granularity of edge tiles keeps N = 784 at 98% useful work.
#include <tessera/kernels/gemm_pack_avx512.h>
#include <tessera/kernels/gemm_ukernel_avx512.h>

namespace tessera::kernels {
namespace {

struct DpBf16 {
  static __m512 madd(__m512 acc, __m512i a, __m512i b) {
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
  }
};

constexpr int kMR = 8, kNR = 48;
// KC = 256 k (128 pairs): the B micro-panel (24 KB) and an A micro-panel (4 KB) share the
// 48 KB L1. MC x KC of A (256 KB) sits in L2 next to the streamed B panels.
const GemmKernel kKernel = {"avx512_bf16", kMR, kNR, 2, {512, 256, 3072},
                            &GemmUkernelTable512<DpBf16, kMR, kNR>::run, &gemm_pack512<2>};

}  // namespace

const GemmKernel* gemm_kernel_avx512_bf16() { return &kKernel; }

}  // namespace tessera::kernels
