// cfp8 packing for the AVX-512 GEMM rungs on CPUs with AVX512_VBMI: this file is compiled with
// -mavx512vbmi, so gemm_pack_avx512.h decodes cfp8 with byte-table permutes (vpermt2b) here;
// the avx512 / avx512_bf16 packers call in when gemm_cfp8_vbmi() says the CPU has VBMI.
#include <tessera/kernels/gemm_pack_avx512.h>

#ifndef __AVX512VBMI__
#error "gemm_pack_cfp8_vbmi.cc must be compiled with -mavx512vbmi"
#endif

namespace tessera::kernels {

void gemm_pack512_cfp8_vbmi(int kpack, const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0,
                            int64_t kc, int w, void* dst) {
  if (kpack == 1) {
    gemm_pack512<1>(op, x0, nx, k0, kc, w, dst);
  } else {
    gemm_pack512<2>(op, x0, nx, k0, kc, w, dst);
  }
}

}  // namespace tessera::kernels
