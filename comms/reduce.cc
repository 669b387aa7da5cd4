#include <tessera/comms/reduce.h>
#include <tessera/core/bf16.h>
#include <tessera/kernels/convert.h>

#include <algorithm>
#include <cstdint>

namespace tessera::comms {

const char* reduce_op_name(ReduceOp op) {
  static const char* names[] = {"sum", "prod", "min", "max"};
  return names[static_cast<int>(op)];
}

ElemType ElemType::make(DType dtype, int bias) {
  ElemType t;
  t.dtype = dtype;
  t.size = dtype_size(dtype);
  switch (dtype) {
    case DType::f32:
    case DType::bf16: break;
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2: {
      Cfp8Layout l = dtype == DType::cfp8_e4m3 ? Cfp8Layout::e4m3 : Cfp8Layout::e5m2;
      if (bias < 0) bias = cfp8_default_bias(l);
      check_cfp8_bias(bias);
      t.fmt = {l, bias};
      break;
    }
    default:
      TESSERA_THROW(TypeError, "collectives carry f32, bf16, cfp8_e4m3 or cfp8_e5m2, not ",
                    dtype_name(dtype));
  }
  return t;
}

namespace {

template <ReduceOp Op>
inline float apply(float a, float b) {
  if constexpr (Op == ReduceOp::sum) return a + b;
  if constexpr (Op == ReduceOp::prod) return a * b;
  if constexpr (Op == ReduceOp::min) return std::min(a, b);
  if constexpr (Op == ReduceOp::max) return std::max(a, b);
}

template <ReduceOp Op>
void reduce_f32(const float* a, const float* b, float* out, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = apply<Op>(a[i], b[i]);
}

template <ReduceOp Op>
void reduce_bf16(const uint16_t* a, const uint16_t* b, uint16_t* out, size_t n) {
  constexpr size_t kBlock = 256;
  float fa[kBlock], fb[kBlock];
  for (size_t i = 0; i < n; i += kBlock) {
    size_t m = std::min(kBlock, n - i);
    kernels::bf16_to_f32(a + i, fa, m);
    kernels::bf16_to_f32(b + i, fb, m);
    for (size_t j = 0; j < m; ++j) fa[j] = apply<Op>(fa[j], fb[j]);
    kernels::f32_to_bf16(fa, out + i, m);
  }
}

template <ReduceOp Op>
void reduce_cfp8(const uint8_t* a, const uint8_t* b, uint8_t* out, size_t n, Cfp8Format fmt) {
  constexpr size_t kBlock = 256;
  float fa[kBlock], fb[kBlock];
  for (size_t i = 0; i < n; i += kBlock) {
    size_t m = std::min(kBlock, n - i);
    kernels::cfp8_to_f32(a + i, fa, m, fmt);
    kernels::cfp8_to_f32(b + i, fb, m, fmt);
    for (size_t j = 0; j < m; ++j) fa[j] = apply<Op>(fa[j], fb[j]);
    kernels::f32_to_cfp8(fa, out + i, m, fmt);
  }
}

template <ReduceOp Op>
void reduce_typed(const ElemType& t, const void* a, const void* b, void* out, size_t n) {
  switch (t.dtype) {
    case DType::f32:
      reduce_f32<Op>(static_cast<const float*>(a), static_cast<const float*>(b),
                     static_cast<float*>(out), n);
      break;
    case DType::bf16:
      reduce_bf16<Op>(static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b),
                      static_cast<uint16_t*>(out), n);
      break;
    default:
      reduce_cfp8<Op>(static_cast<const uint8_t*>(a), static_cast<const uint8_t*>(b),
                      static_cast<uint8_t*>(out), n, t.fmt);
  }
}

}  // namespace

void reduce(ReduceOp op, const ElemType& t, const void* a, const void* b, void* out, size_t n) {
  switch (op) {
    case ReduceOp::sum: return reduce_typed<ReduceOp::sum>(t, a, b, out, n);
    case ReduceOp::prod: return reduce_typed<ReduceOp::prod>(t, a, b, out, n);
    case ReduceOp::min: return reduce_typed<ReduceOp::min>(t, a, b, out, n);
    case ReduceOp::max: return reduce_typed<ReduceOp::max>(t, a, b, out, n);
  }
}

}  // namespace tessera::comms
