// Pooling loops compiled with AVX-512 flags (pool2d_loops.h): 16 channels per vector.
#include <tessera/kernels/pool2d_loops.h>

namespace tessera::kernels {
const Pool2dFns* pool2d_fns_avx512() { return &kPoolFns; }
}  // namespace tessera::kernels
