// Tensor <-> proto (proto/tensor.proto). Data is written row-major, little-endian, with a
// crc32; reading validates dtype id, cfp8 bias, shape, byte count and checksum, and throws
// ValueError (bad fields) or IoError (checksum mismatch) naming what was wrong.
#pragma once

#include <tessera/core/tensor.h>
#include <tessera/proto/tensor.pb.h>

#include <string>

namespace tessera {

proto::Tensor tensor_to_proto(const Tensor& t);
Tensor tensor_from_proto(const proto::Tensor& p, const std::string& what = "tensor");

uint32_t crc32_of(const void* data, size_t n);

}  // namespace tessera
