// gemm_bench without the avx512_bf16 rung compiled in: no peak to report.
#include "gemm_bench_peers.h"

namespace tessera::bench {
double peak_bf16_gflops(int) { return 0; }
double peak_f32_gflops(int) { return 0; }
}  // namespace tessera::bench
