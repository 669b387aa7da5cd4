// Vectorized conversions equal the scalar reference bit for bit at every ISA rung.
#include <tessera/core/error.h>
#include <tessera/kernels/convert.h>
#include <tessera/kernels/reduce.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace tessera::kernels {
namespace {

// Bitwise equality (NaN payloads included); empty vectors compare equal.
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * 4) == 0);
}

const size_t kLengths[] = {0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 1000, 100003};

std::vector<float> inputs(size_t n, uint64_t seed) {
  const float specials[] = {0.0f, -0.0f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), std::nanf(""), -std::nanf("0x123"),
                            1e-40f, -1e-45f, 3.4e38f, 480.0f, 496.0f, 1.0f + 1.0f / 16, 0.00048828125f};
  std::vector<float> v(n);
  uint64_t s = seed;
  for (size_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    if (i % 7 == 3) {
      v[i] = specials[(s >> 40) % (sizeof specials / sizeof specials[0])];
    } else {
      // Log-uniform magnitudes from 2^-70 to 2^40, random sign.
      double u = static_cast<double>((s >> 11) % 1000003) / 1000003.0;
      double mag = std::ldexp(1.0, -70) * std::pow(2.0, u * 110);
      v[i] = static_cast<float>((s >> 63) ? -mag : mag);
    }
  }
  return v;
}

class ConvertRung : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu_isa()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
    if (GetParam() > compiled_isa()) GTEST_SKIP() << isa_name(GetParam()) << " not compiled";
    cap_ = std::make_unique<ScopedIsaCap>(GetParam());
  }
  std::unique_ptr<ScopedIsaCap> cap_;
};

TEST_P(ConvertRung, DispatchHonoursTheCap) {
  EXPECT_EQ(active_isa(), GetParam());
  const ConvertFns* expected = GetParam() >= Isa::avx512 ? convert_fns_avx512()
                               : GetParam() == Isa::avx2 ? convert_fns_avx2()
                                                         : convert_fns_scalar();
  EXPECT_EQ(&convert_fns(), expected);
}

TEST_P(ConvertRung, Bf16BitExact) {
  const ConvertFns& ref = *convert_fns_scalar();
  for (size_t n : kLengths) {
    auto x = inputs(n, n + 1);
    std::vector<uint16_t> got(n + 1, 0xdead), want(n + 1, 0xdead);
    f32_to_bf16(x.data(), got.data(), n);
    ref.f32_to_bf16(x.data(), want.data(), n);
    ASSERT_EQ(got, want) << "n=" << n;  // includes the guard element past the end
    std::vector<float> wf(n), rf(n);
    bf16_to_f32(got.data(), wf.data(), n);
    ref.bf16_to_f32(got.data(), rf.data(), n);
    ASSERT_TRUE(same_bits(wf, rf)) << "n=" << n;
  }
}

TEST_P(ConvertRung, Cfp8BitExact) {
  const ConvertFns& ref = *convert_fns_scalar();
  for (Cfp8Layout l : {Cfp8Layout::e4m3, Cfp8Layout::e5m2}) {
    for (int bias : {0, 7, 15, 31, 63}) {
      Cfp8Format f{l, bias};
      for (size_t n : kLengths) {
        auto x = inputs(n, n * 31 + bias);
        std::vector<uint8_t> got(n + 1, 0xa5), want(n + 1, 0xa5);
        f32_to_cfp8(x.data(), got.data(), n, f);
        size_t nans = ref.f32_to_cfp8_rne(x.data(), want.data(), n, f);
        ASSERT_EQ(got, want) << cfp8_layout_name(l) << " bias " << bias << " n=" << n;
        size_t expect_nans = 0;
        for (float v : x) expect_nans += std::isnan(v);
        ASSERT_EQ(nans, expect_nans);

        for (uint64_t seed : {0ull, 77ull}) {
          f32_to_cfp8(x.data(), got.data(), n, f, Rounding::stochastic, seed, /*offset=*/5);
          ref.f32_to_cfp8_sr(x.data(), want.data(), n, f, cfp8_sr_key(seed, 0), 5);
          ASSERT_EQ(got, want) << "stochastic, n=" << n;
        }
        std::vector<float> df(n), rf(n);
        std::vector<uint16_t> db(n), rb(n);
        cfp8_to_f32(got.data(), df.data(), n, f);
        ref.cfp8_to_f32(got.data(), rf.data(), n, f);
        ASSERT_TRUE(same_bits(df, rf));
        cfp8_to_bf16(got.data(), db.data(), n, f);
        ref.cfp8_to_bf16(got.data(), rb.data(), n, f);
        ASSERT_EQ(db, rb);
      }
    }
  }
}

// f32_round_to (one pass, f32 -> f32) equals narrowing and widening with the scalar reference,
// bit for bit, NaN payloads included, and counts cfp8 NaNs once each; in place too.
TEST_P(ConvertRung, RoundToEqualsNarrowThenWiden) {
  const ConvertFns& ref = *convert_fns_scalar();
  for (size_t n : kLengths) {
    auto x = inputs(n, n * 17 + 1);
    std::vector<uint16_t> h(n);
    std::vector<float> want(n), got(n, 1.f);
    ref.f32_to_bf16(x.data(), h.data(), n);
    ref.bf16_to_f32(h.data(), want.data(), n);
    f32_round_to(x.data(), got.data(), n, DType::bf16);
    ASSERT_TRUE(same_bits(got, want)) << "bf16 n=" << n;
    for (Cfp8Layout l : {Cfp8Layout::e4m3, Cfp8Layout::e5m2}) {
      for (int bias : {0, 7, 15, 40, 63}) {
        Cfp8Format f{l, bias};
        std::vector<uint8_t> q(n);
        ref.f32_to_cfp8_rne(x.data(), q.data(), n, f);
        ref.cfp8_to_f32(q.data(), want.data(), n, f);
        size_t expect_nans = 0;
        for (float v : x) expect_nans += std::isnan(v);
        const uint64_t before = cfp8_invalid_count();
        got = x;
        f32_round_to(got.data(), got.data(), n, l == Cfp8Layout::e4m3 ? DType::cfp8_e4m3 : DType::cfp8_e5m2, f);
        ASSERT_TRUE(same_bits(got, want)) << cfp8_layout_name(l) << " bias " << bias << " n=" << n;
        EXPECT_EQ(cfp8_invalid_count() - before, expect_nans);
      }
    }
  }
  EXPECT_THROW(f32_round_to(nullptr, nullptr, 0, DType::i32), TypeError);
  std::vector<float> one(1, 1.f);
  EXPECT_THROW(f32_round_to(one.data(), one.data(), 1, DType::cfp8_e4m3, Cfp8Format{Cfp8Layout::e4m3, 64}), ValueError);
}

TEST_P(ConvertRung, AllCodesDecodeLikeTheReference) {
  std::vector<uint8_t> codes(256);
  for (int c = 0; c < 256; ++c) codes[c] = static_cast<uint8_t>(c);
  for (Cfp8Layout l : {Cfp8Layout::e4m3, Cfp8Layout::e5m2}) {
    for (int bias = 0; bias <= kCfp8MaxBias; ++bias) {
      Cfp8Format f{l, bias};
      std::vector<float> v(256);
      cfp8_to_f32(codes.data(), v.data(), 256, f);
      for (int c = 0; c < 256; ++c) ASSERT_EQ(f32_bits(v[c]), f32_bits(cfp8_decode(codes[c], f))) << c;
      std::vector<uint8_t> back(256);
      f32_to_cfp8(v.data(), back.data(), 256, f);
      ASSERT_EQ(back, codes);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllRungs, ConvertRung, ::testing::ValuesIn(kAllIsas),
                         [](const auto& info) { return std::string(isa_name(info.param)); });

TEST(Convert, StochasticPiecesEqualOneCall) {
  auto x = inputs(10000, 4);
  Cfp8Format f{Cfp8Layout::e5m2, 15};
  std::vector<uint8_t> whole(10000), pieces(10000);
  f32_to_cfp8(x.data(), whole.data(), 10000, f, Rounding::stochastic, 9, 1000);
  f32_to_cfp8(x.data(), pieces.data(), 3333, f, Rounding::stochastic, 9, 1000);
  f32_to_cfp8(x.data() + 3333, pieces.data() + 3333, 6667, f, Rounding::stochastic, 9, 1000 + 3333);
  EXPECT_EQ(whole, pieces);
  // A call crossing a 2^32 block boundary is split, and still equals the scalar stream.
  uint64_t off = (uint64_t{1} << 32) - 10;
  std::vector<uint8_t> a(100), want(100);
  f32_to_cfp8(x.data(), a.data(), 100, f, Rounding::stochastic, 9, off);
  for (size_t i = 0; i < 100; ++i) {
    uint64_t pos = off + i;
    want[i] = cfp8_encode_stochastic(x[i], f, cfp8_sr_bits(cfp8_sr_key(9, pos >> 32), static_cast<uint32_t>(pos)));
    if (std::isnan(x[i])) want[i] = kCfp8NanCode;
  }
  EXPECT_EQ(a, want);
}

TEST_P(ConvertRung, EncodeWithAmaxEqualsEncodeThenAmax) {
  // Sizes around the parallel piece (65536 elements) and past several of them.
  for (size_t n : {size_t{0}, size_t{1}, size_t{17}, size_t{65535}, size_t{65536 * 3 + 5}}) {
    auto x = inputs(n, 11);
    for (auto& v : x) if (std::isnan(v)) v = 1.5f;  // NaN-free here; NaN below
    for (Rounding r : {Rounding::nearest_even, Rounding::stochastic}) {
      Cfp8Format f{Cfp8Layout::e4m3, 9};
      std::vector<uint8_t> want(n), got(n);
      f32_to_cfp8(x.data(), want.data(), n, f, r, 5, 77);
      float a = f32_to_cfp8_amax(x.data(), got.data(), n, f, r, 5, 77);
      EXPECT_EQ(got, want) << n;
      EXPECT_EQ(a, amax(x.data(), n)) << n;
    }
    if (n > 0) {
      x[n / 2] = std::nanf("");
      std::vector<uint8_t> got(n);
      const uint64_t before = cfp8_invalid_count();
      EXPECT_TRUE(std::isnan(f32_to_cfp8_amax(x.data(), got.data(), n, {Cfp8Layout::e5m2, 15})));
      EXPECT_EQ(cfp8_invalid_count() - before, 1u) << "the NaN is counted once";
      EXPECT_EQ(got[n / 2], 0x00) << "NaN encodes to +0";
      x[n / 2] = -std::numeric_limits<float>::infinity();
      EXPECT_EQ(f32_to_cfp8_amax(x.data(), got.data(), n, {Cfp8Layout::e5m2, 15}),
                std::numeric_limits<float>::infinity());
    }
  }
}

TEST_P(ConvertRung, Cfp8AsBf16EqualsEncodeThenWiden) {
  for (size_t n : {size_t{0}, size_t{5}, size_t{16}, size_t{1000}, size_t{65536 * 2 + 9}}) {
    auto x = inputs(n, 23);  // specials included: NaN, +-Inf, zeros, subnormals
    size_t expect_nans = 0;
    for (float v : x) expect_nans += std::isnan(v);
    for (Cfp8Format f : {Cfp8Format{Cfp8Layout::e4m3, 7}, Cfp8Format{Cfp8Layout::e4m3, 20},
                         Cfp8Format{Cfp8Layout::e5m2, 15}, Cfp8Format{Cfp8Layout::e5m2, 40}}) {
      std::vector<uint8_t> q(n);
      std::vector<uint16_t> want(n), got(n);
      f32_to_cfp8(x.data(), q.data(), n, f);
      cfp8_to_bf16(q.data(), want.data(), n, f);
      const uint64_t before = cfp8_invalid_count();
      const float a = f32_to_cfp8_as_bf16_amax(x.data(), got.data(), n, f);
      EXPECT_EQ(cfp8_invalid_count() - before, expect_nans);
      EXPECT_EQ(got, want) << "n " << n << " bias " << f.bias;
      const float ref = amax(x.data(), n);
      if (std::isnan(ref)) EXPECT_TRUE(std::isnan(a)); else EXPECT_EQ(a, ref);
    }
  }
}

TEST(Convert, NaNsAreCounted) {
  std::vector<float> x(40, std::nanf(""));
  std::vector<uint8_t> c(40);
  uint64_t before = cfp8_invalid_count();
  f32_to_cfp8(x.data(), c.data(), 40, {Cfp8Layout::e4m3, 7});
  EXPECT_EQ(cfp8_invalid_count(), before + 40);
  for (uint8_t v : c) EXPECT_EQ(v, kCfp8NanCode);
  EXPECT_THROW(f32_to_cfp8(x.data(), c.data(), 40, {Cfp8Layout::e4m3, 64}), ValueError);
}

TEST(Isa, NamesRoundTripAndBadNamesAreRejected) {
  for (Isa isa : kAllIsas) EXPECT_EQ(isa_from_name(isa_name(isa)), isa);
  try {
    isa_from_name("sse9");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'sse9'"), std::string::npos);
  }
}

}  // namespace
}  // namespace tessera::kernels
