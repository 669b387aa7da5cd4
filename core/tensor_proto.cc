#include <tessera/core/tensor_proto.h>

#include <zlib.h>

#include <cstring>

namespace tessera {

static_assert(static_cast<int>(proto::F32) == static_cast<int>(DType::f32));
static_assert(static_cast<int>(proto::BF16) == static_cast<int>(DType::bf16));
static_assert(static_cast<int>(proto::CFP8_E4M3) == static_cast<int>(DType::cfp8_e4m3));
static_assert(static_cast<int>(proto::CFP8_E5M2) == static_cast<int>(DType::cfp8_e5m2));
static_assert(static_cast<int>(proto::I32) == static_cast<int>(DType::i32));
static_assert(static_cast<int>(proto::I64) == static_cast<int>(DType::i64));

uint32_t crc32_of(const void* data, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {  // zlib takes uInt lengths
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

proto::Tensor tensor_to_proto(const Tensor& t) {
  TESSERA_CHECK(t.defined(), "tensor_to_proto: tensor is undefined");
  Tensor c = t.contiguous();
  proto::Tensor p;
  p.set_dtype(static_cast<proto::DType>(static_cast<int>(t.dtype())));
  p.set_cfp8_bias(is_cfp8(t.dtype()) ? static_cast<uint32_t>(t.cfp8_bias()) : 0);
  for (int64_t d : t.shape().dims()) p.add_shape(d);
  p.set_data(static_cast<const char*>(c.raw_data()), c.nbytes());  // x86-64: little-endian
  p.set_crc32(crc32_of(c.raw_data(), c.nbytes()));
  return p;
}

Tensor tensor_from_proto(const proto::Tensor& p, const std::string& what) {
  int id = static_cast<int>(p.dtype());
  TESSERA_CHECK(dtype_id_valid(id), what, ": unknown dtype id ", id);
  DType dtype = dtype_from_id(id);
  int bias = -1;
  if (is_cfp8(dtype)) {
    TESSERA_CHECK(p.cfp8_bias() <= static_cast<uint32_t>(kCfp8MaxBias), what, ": cfp8 exponent bias ",
                  p.cfp8_bias(), " is out of range 0..", kCfp8MaxBias);
    bias = static_cast<int>(p.cfp8_bias());
  }
  std::vector<int64_t> dims(p.shape().begin(), p.shape().end());
  for (size_t i = 0; i < dims.size(); ++i) {
    TESSERA_CHECK(dims[i] >= 0, what, ": bad shape ", dims_str(dims), " (dimension ", i, " is ", dims[i], ")");
  }
  Shape shape(dims);
  size_t expected = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  TESSERA_CHECK(p.data().size() == expected, what, ": holds ", p.data().size(), " bytes but shape ",
                shape.str(), " of ", dtype_name(dtype), " needs ", expected);
  uint32_t crc = crc32_of(p.data().data(), p.data().size());
  if (crc != p.crc32()) {
    TESSERA_THROW(IoError, what, ": checksum mismatch (stored crc32 ", p.crc32(), ", data has ", crc,
                  "): the data is corrupted");
  }
  Tensor t = Tensor::empty(shape, dtype, bias);
  std::memcpy(t.raw_data(), p.data().data(), expected);
  return t;
}

}  // namespace tessera
