#include <tessera/core/bf16.h>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace tessera {
namespace {

TEST(Bf16, AllCodesWidenAndNarrowBackUnchanged) {
  for (uint32_t c = 0; c < 65536; ++c) {
    uint16_t code = static_cast<uint16_t>(c);
    float f = bf16_to_f32(code);
    EXPECT_EQ(f32_bits(f), c << 16) << "widening is not exact for code " << c;
    uint16_t back = f32_to_bf16(f);
    if (bf16_is_nan(code)) {
      EXPECT_TRUE(std::isnan(f)) << c;
      EXPECT_TRUE(bf16_is_nan(back)) << c;
      EXPECT_EQ(back & 0x0040, 0x0040) << "NaN must come back quiet: " << c;
      EXPECT_EQ(back & 0x8000, code & 0x8000) << "NaN sign kept: " << c;
    } else {
      EXPECT_EQ(back, code) << "code " << c;
    }
  }
}

struct Case {
  uint32_t f32;
  uint16_t bf16;
};

TEST(Bf16, RoundingTable) {
  const Case cases[] = {
      {0x3f800000, 0x3f80},  // 1.0 exact
      {0x3f808000, 0x3f80},  // tie, lower is even -> down
      {0x3f818000, 0x3f82},  // tie, lower is odd -> up
      {0x3f808001, 0x3f81},  // just above tie -> up
      {0x3f807fff, 0x3f80},  // just below tie -> down
      {0xbf808000, 0xbf80},  // negative tie -> even
      {0xbf818000, 0xbf82},
      {0x00000000, 0x0000},  // +0
      {0x80000000, 0x8000},  // -0
      {0x00000001, 0x0000},  // smallest denormal -> +0
      {0x00008000, 0x0000},  // denormal tie -> even (0)
      {0x00018000, 0x0002},  // denormal tie, odd lower -> up
      {0x007fffff, 0x0080},  // largest denormal rounds up to the smallest normal
      {0x80010000, 0x8001},  // negative denormal exact
      {0x7f7fffff, 0x7f80},  // f32 max rounds to +Inf
      {0x7f7f7fff, 0x7f7f},  // stays finite
      {0xff7fffff, 0xff80},  // -max -> -Inf
      {0x7f800000, 0x7f80},  // +Inf
      {0xff800000, 0xff80},  // -Inf
      {0x7fc00000, 0x7fc0},  // quiet NaN
      {0x7f800001, 0x7fc0},  // signalling NaN, low payload -> quiet
      {0xffa00000, 0xffe0},  // negative signalling NaN keeps sign and payload, becomes quiet
  };
  for (const auto& c : cases) {
    EXPECT_EQ(f32_to_bf16(f32_from_bits(c.f32)), c.bf16) << std::hex << "f32 bits 0x" << c.f32;
  }
}

TEST(Bf16, RoundToNearestAgainstDoubleOnRandomValues) {
  uint64_t s = 12345;
  for (int i = 0; i < 200000; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t bits = static_cast<uint32_t>(s >> 32);
    float f = f32_from_bits(bits);
    if (!std::isfinite(f)) continue;
    uint16_t b = f32_to_bf16(f);
    double got = bf16_to_f32(b);
    if (std::isinf(got)) {  // overflow: only from beyond bf16 max + half an ulp
      EXPECT_GE(std::fabs(f), 3.3961775e38f) << f;
      continue;
    }
    // Neighbours of the result must not be closer.
    double up = bf16_to_f32(static_cast<uint16_t>(b + 1));
    double down = bf16_to_f32(static_cast<uint16_t>(b - 1));
    double err = std::fabs(got - f);
    if (std::isfinite(up)) {
      EXPECT_LE(err, std::fabs(up - f)) << f;
    }
    if (std::isfinite(down) && (b & 0x7fff) != 0) {
      EXPECT_LE(err, std::fabs(down - f)) << f;
    }
  }
}

}  // namespace
}  // namespace tessera
