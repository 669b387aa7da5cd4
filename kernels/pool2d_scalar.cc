// Pooling loops at the base ISA (the reference rung; pool2d_loops.h).
#include <tessera/kernels/pool2d_loops.h>

namespace tessera::kernels {
const Pool2dFns* pool2d_fns_scalar() { return &kPoolFns; }
}  // namespace tessera::kernels
