#include <tessera/core/tensor.h>
#include <tessera/core/tensor_proto.h>

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

namespace tessera {
namespace {

Tensor iota(const Shape& s) {
  Tensor t = Tensor::empty(s);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(i);
  return t;
}

TEST(Tensor, ContiguousBasicsAndAlignment) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.strides(), (std::vector<int64_t>{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);
  EXPECT_EQ(t.item({1, 2, 3}), 0.0);
  t.set_item({1, 2, 3}, 5.5);
  EXPECT_EQ(t.item({1, 2, 3}), 5.5);
  EXPECT_THROW(t.item({2, 0, 0}), IndexError);
  EXPECT_THROW(t.item({0, 0}), IndexError);
  EXPECT_THROW(t.data<uint16_t>(), TypeError);
  EXPECT_FALSE(Tensor().defined());
  EXPECT_THROW(Tensor().contiguous(), ValueError);
}

TEST(Tensor, ViewsShareStorageAndStride) {
  Tensor t = iota({3, 4});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), Shape({4, 3}));
  EXPECT_EQ(tt.strides(), (std::vector<int64_t>{1, 4}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_TRUE(tt.shares_storage(t));
  EXPECT_EQ(tt.item({3, 2}), 11.0);

  Tensor s = t.slice(1, 1, 4, 2);  // columns 1 and 3
  EXPECT_EQ(s.shape(), Shape({3, 2}));
  EXPECT_EQ(s.item({2, 1}), 11.0);
  s.set_item({0, 0}, -1);
  EXPECT_EQ(t.item({0, 1}), -1.0) << "writes through a view are visible";

  Tensor row = t.select(0, -1);
  EXPECT_EQ(row.shape(), Shape({4}));
  EXPECT_EQ(row.item({0}), 8.0);

  Tensor c = tt.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_FALSE(c.shares_storage(t));
  EXPECT_EQ(c.to_f32_vector(), (std::vector<float>{0, 4, 8, -1, 5, 9, 2, 6, 10, 3, 7, 11}));

  EXPECT_THROW(tt.view({12}), ValueError);
  Tensor r = tt.reshape({12});
  EXPECT_EQ(r.item({1}), 4.0);
  Tensor v = t.view({2, 6});
  EXPECT_TRUE(v.shares_storage(t));
  EXPECT_THROW(t.view({5, 3}), ValueError);
  EXPECT_THROW(t.slice(1, 2, 9), IndexError);
  EXPECT_THROW(t.permute({0, 0}), ValueError);

  Tensor p = iota({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), Shape({4, 2, 3}));
  EXPECT_EQ(p.item({3, 1, 2}), 1 * 12 + 2 * 4 + 3);
}

TEST(Tensor, ConversionsMatchScalarReferences) {
  Tensor x = Tensor::normal({5, 37}, 0.0, 3.0, /*seed=*/11);
  Tensor b = x.to(DType::bf16);
  Tensor c = x.to(DType::cfp8_e4m3, 9);
  Tensor c5 = x.to(DType::cfp8_e5m2);
  EXPECT_EQ(c.cfp8_bias(), 9);
  EXPECT_EQ(c5.cfp8_bias(), 15);
  for (int64_t i = 0; i < 5; ++i) {
    for (int64_t j = 0; j < 37; ++j) {
      float v = static_cast<float>(x.item({i, j}));
      EXPECT_EQ(b.data<uint16_t>()[i * 37 + j], f32_to_bf16(v));
      EXPECT_EQ(c.data<uint8_t>()[i * 37 + j], cfp8_encode(v, {Cfp8Layout::e4m3, 9}));
      EXPECT_EQ(c5.item({i, j}), cfp8_decode(cfp8_encode(v, {Cfp8Layout::e5m2, 15}), {Cfp8Layout::e5m2, 15}));
    }
  }
  // Strided source converts like its contiguous copy.
  Tensor xt = x.transpose(0, 1);
  EXPECT_EQ(xt.to(DType::bf16).to_f32_vector(), xt.contiguous().to(DType::bf16).to_f32_vector());
  // cfp8 -> bf16 is exact.
  EXPECT_EQ(c.to(DType::bf16).to_f32_vector(), c.to_f32_vector());
  // cfp8 -> cfp8 with another bias goes through the decoded values.
  Tensor c2 = c.to(DType::cfp8_e4m3, 5);
  EXPECT_EQ(c2.cfp8_bias(), 5);
  // Stochastic rounding is reproducible for a seed.
  Tensor s1 = x.to(DType::cfp8_e4m3, 7, Rounding::stochastic, 3);
  Tensor s2 = x.to(DType::cfp8_e4m3, 7, Rounding::stochastic, 3);
  EXPECT_EQ(s1.to_f32_vector(), s2.to_f32_vector());
  // Integers.
  Tensor i = Tensor::arange(5, DType::i64);
  EXPECT_EQ(i.to(DType::f32).to_f32_vector(), (std::vector<float>{0, 1, 2, 3, 4}));
  EXPECT_EQ(i.to(DType::i32).item({4}), 4.0);
  EXPECT_EQ(Tensor::full({2}, -2.7).to(DType::i32).item({0}), -2.0);
  EXPECT_THROW(Tensor::full({1}, 1e20).to(DType::i32), ValueError);
  EXPECT_THROW(Tensor::full({1}, NAN).to(DType::i64), ValueError);
  EXPECT_THROW(x.cfp8_format(), TypeError);
}

TEST(Tensor, SeededFillsAreReproducible) {
  Tensor a = Tensor::uniform({1000}, -1, 1, 5);
  Tensor b = Tensor::uniform({1000}, -1, 1, 5);
  Tensor c = Tensor::uniform({1000}, -1, 1, 6);
  EXPECT_EQ(a.to_f32_vector(), b.to_f32_vector());
  EXPECT_NE(a.to_f32_vector(), c.to_f32_vector());
  double mean = 0, sq = 0;
  Tensor n = Tensor::normal({100000}, 2.0, 0.5, 9);
  for (float v : n.to_f32_vector()) {
    mean += v;
    sq += (v - 2.0) * (v - 2.0);
  }
  EXPECT_NEAR(mean / 100000, 2.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / 100000), 0.5, 0.01);
  for (float v : a.to_f32_vector()) {
    EXPECT_GE(v, -1.0f);
    EXPECT_LT(v, 1.0f);
  }
}

TEST(Tensor, PrintsReadably) {
  std::string s = iota({2, 3}).str();
  EXPECT_NE(s.find("shape=[2, 3], dtype=f32"), std::string::npos) << s;
  EXPECT_NE(s.find("[[0, 1, 2],\n [3, 4, 5]]"), std::string::npos) << s;
  std::string big = iota({100, 100}).str();
  EXPECT_NE(big.find("..."), std::string::npos);
  EXPECT_LT(big.size(), 400u);
  std::ostringstream os;
  os << Tensor::zeros({2}, DType::cfp8_e5m2, 20);
  EXPECT_NE(os.str().find("cfp8_e5m2(bias=20)"), std::string::npos) << os.str();
}

TEST(Tensor, ProtoRoundTripForEveryDtype) {
  Tensor x = Tensor::normal({3, 5}, 0, 4, 1);
  for (const auto& info : kDTypeTable) {
    Tensor t = info.is_float ? x.transpose(0, 1).to(info.id, info.is_cfp8 ? 11 : -1)
                             : Tensor::arange(15, info.id).view({5, 3});
    proto::Tensor p = tensor_to_proto(t);
    std::string wire;
    ASSERT_TRUE(p.SerializeToString(&wire));
    proto::Tensor q;
    ASSERT_TRUE(q.ParseFromString(wire));
    Tensor back = tensor_from_proto(q);
    EXPECT_EQ(back.dtype(), t.dtype()) << info.name;
    EXPECT_EQ(back.shape(), t.shape());
    EXPECT_EQ(back.cfp8_bias(), t.cfp8_bias());
    EXPECT_EQ(back.to_f32_vector(), t.to_f32_vector()) << info.name;
  }
}

TEST(Tensor, ProtoRejectsBadMessages) {
  proto::Tensor p = tensor_to_proto(Tensor::normal({4, 4}, 0, 1, 2));
  proto::Tensor flipped = p;
  std::string d = flipped.data();
  d[5] ^= 0x10;
  flipped.set_data(d);
  EXPECT_THROW(tensor_from_proto(flipped), IoError);
  proto::Tensor truncated = p;
  truncated.set_data(p.data().substr(0, 60));
  try {
    tensor_from_proto(truncated, "weights");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("weights: holds 60 bytes"), std::string::npos) << e.what();
  }
  proto::Tensor bad_bias = tensor_to_proto(Tensor::zeros({2}, DType::cfp8_e4m3));
  bad_bias.set_cfp8_bias(64);
  EXPECT_THROW(tensor_from_proto(bad_bias), ValueError);
  proto::Tensor bad_dtype = p;
  bad_dtype.set_dtype(static_cast<proto::DType>(42));
  EXPECT_THROW(tensor_from_proto(bad_dtype), ValueError);
  proto::Tensor bad_shape = p;
  bad_shape.set_shape(0, -4);
  EXPECT_THROW(tensor_from_proto(bad_shape), ValueError);
}

}  // namespace
}  // namespace tessera
