#include <tessera/core/dtype.h>
#include <tessera/proto/dtype.pb.h>

#include <gtest/gtest.h>

namespace tessera {
namespace {

TEST(DType, TableIsOrderedById) {
  for (int i = 0; i < kNumDTypes; ++i) {
    EXPECT_EQ(static_cast<int>(kDTypeTable[i].id), i + 1);
    EXPECT_EQ(dtype_from_name(kDTypeTable[i].name), kDTypeTable[i].id);
  }
}

TEST(DType, IdsAgreeWithProto) {
  // Every core id has a proto enum value of the same number and the same name.
  const auto* desc = proto::DType_descriptor();
  for (const auto& info : kDTypeTable) {
    const auto* v = desc->FindValueByNumber(static_cast<int>(info.id));
    ASSERT_NE(v, nullptr) << info.name;
    std::string upper = info.name;
    for (auto& ch : upper) ch = static_cast<char>(std::toupper(ch));
    EXPECT_EQ(v->name(), upper);
  }
  // And the proto has nothing core lacks (besides UNSPECIFIED = 0).
  EXPECT_EQ(desc->value_count(), kNumDTypes + 1);
}

TEST(DType, SizesAndFlags) {
  EXPECT_EQ(dtype_size(DType::f32), 4u);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::cfp8_e4m3), 1u);
  EXPECT_EQ(dtype_size(DType::cfp8_e5m2), 1u);
  EXPECT_EQ(dtype_size(DType::i32), 4u);
  EXPECT_EQ(dtype_size(DType::i64), 8u);
  EXPECT_TRUE(is_cfp8(DType::cfp8_e5m2));
  EXPECT_FALSE(is_cfp8(DType::bf16));
}

TEST(DType, UnknownNameNamesTheValue) {
  try {
    dtype_from_name("float8");
    FAIL() << "expected ValueError";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'float8'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cfp8_e4m3"), std::string::npos) << e.what();
  }
  EXPECT_THROW(dtype_from_id(0), ValueError);
  EXPECT_THROW(dtype_from_id(7), ValueError);
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::bf16);
}

}  // namespace
}  // namespace tessera
