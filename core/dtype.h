// The dtype table: every element type tessera knows, listed once.
//
//   DType t = dtype_from_name("cfp8_e4m3");   // throws ValueError on an unknown name
//   dtype_info(t).size;                       // 1 byte
//
// The numeric ids are frozen: proto/dtype.proto serializes them and checkpoints store them.
// Never renumber; add new types at the end.
#pragma once

#include <tessera/core/error.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

enum class DType : uint8_t {
  f32 = 1,
  bf16 = 2,
  cfp8_e4m3 = 3,
  cfp8_e5m2 = 4,
  i32 = 5,
  i64 = 6,
};

struct DTypeInfo {
  DType id;
  const char* name;
  size_t size;           // bytes per element
  bool is_float;
  bool is_cfp8;          // carries an exponent bias as metadata
  const char* storage;   // the C++ storage type
};

// Ordered by id. kDTypeTable[i].id == i + 1.
inline constexpr DTypeInfo kDTypeTable[] = {
    {DType::f32, "f32", 4, true, false, "float"},
    {DType::bf16, "bf16", 2, true, false, "uint16_t"},
    {DType::cfp8_e4m3, "cfp8_e4m3", 1, true, true, "uint8_t"},
    {DType::cfp8_e5m2, "cfp8_e5m2", 1, true, true, "uint8_t"},
    {DType::i32, "i32", 4, false, false, "int32_t"},
    {DType::i64, "i64", 8, false, false, "int64_t"},
};
inline constexpr int kNumDTypes = sizeof(kDTypeTable) / sizeof(kDTypeTable[0]);

inline bool dtype_id_valid(int id) { return id >= 1 && id <= kNumDTypes; }

inline const DTypeInfo& dtype_info(DType t) {
  int id = static_cast<int>(t);
  TESSERA_CHECK(dtype_id_valid(id), "unknown dtype id ", id);
  return kDTypeTable[id - 1];
}
inline const char* dtype_name(DType t) { return dtype_info(t).name; }
inline size_t dtype_size(DType t) { return dtype_info(t).size; }
inline bool is_cfp8(DType t) { return dtype_info(t).is_cfp8; }

inline DType dtype_from_id(int id) {
  TESSERA_CHECK(dtype_id_valid(id), "unknown dtype id ", id, " (known ids: 1..", kNumDTypes, ")");
  return kDTypeTable[id - 1].id;
}

inline DType dtype_from_name(std::string_view name) {
  std::string known;
  for (const auto& info : kDTypeTable) {
    if (name == info.name) return info.id;
    known += known.empty() ? "" : ", ";
    known += info.name;
  }
  // Friendly aliases people type.
  if (name == "float32" || name == "float") return DType::f32;
  if (name == "bfloat16") return DType::bf16;
  if (name == "int32") return DType::i32;
  if (name == "int64") return DType::i64;
  TESSERA_THROW(ValueError, "unknown dtype name '", name, "' (known: ", known, ")");
}

}  // namespace tessera
