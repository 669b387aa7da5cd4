// Element-wise reduction of two buffers for the collectives: out = a (op) b, computed in f32
// and rounded once to the element type (bf16: nearest even; cfp8: nearest even with the
// buffer's exponent bias, saturating). out may alias a or b.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>

#include <cstddef>

namespace tessera::comms {

enum class ReduceOp : uint8_t { sum = 0, prod = 1, min = 2, max = 3 };
const char* reduce_op_name(ReduceOp op);

// An element type collectives carry: f32, bf16, cfp8_e4m3 or cfp8_e5m2 (+ bias).
struct ElemType {
  DType dtype = DType::f32;
  Cfp8Format fmt{};
  size_t size = 4;
  // TypeError for dtypes collectives do not carry; ValueError for a bad bias. bias < 0: default.
  static ElemType make(DType dtype, int cfp8_bias = -1);
};

void reduce(ReduceOp op, const ElemType& t, const void* a, const void* b, void* out, size_t n);

}  // namespace tessera::comms
