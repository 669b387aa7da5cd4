#include <tessera/core/cfp8.h>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

namespace tessera {
namespace {

const Cfp8Layout kLayouts[] = {Cfp8Layout::e4m3, Cfp8Layout::e5m2};

// Value of a code computed independently of cfp8_decode, in double.
double value_of(uint8_t code, Cfp8Format f) {
  int M = f.mant_bits();
  int e = (code & 0x7f) >> M, m = code & ((1 << M) - 1);
  double mag = e == 0 ? std::ldexp(m, 1 - f.bias - M) : std::ldexp((1 << M) + m, e - f.bias - M);
  return (code & 0x80) ? -mag : mag;
}

// Nearest code by brute force over all 128 magnitudes; ties go to the even code; beyond the
// largest magnitude saturate; the sign is copied.
uint8_t brute_force_nearest(float x, Cfp8Format f) {
  double a = std::fabs(static_cast<double>(x));
  uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (a >= value_of(127, f)) return static_cast<uint8_t>(127 | sign);
  int best = 0;
  double best_err = std::numeric_limits<double>::infinity();
  for (int c = 0; c < 128; ++c) {
    double err = std::fabs(value_of(static_cast<uint8_t>(c), f) - a);
    if (err < best_err || (err == best_err && (c & 1) == 0)) {
      best = c;
      best_err = err;
    }
  }
  return static_cast<uint8_t>(best | sign);
}

TEST(Cfp8, DesignExamples) {
  EXPECT_EQ(cfp8_max({Cfp8Layout::e4m3, 7}), 480.0f);
  EXPECT_EQ(cfp8_max({Cfp8Layout::e5m2, 15}), 114688.0f);
  EXPECT_EQ(cfp8_min_subnormal({Cfp8Layout::e4m3, 7}), std::ldexp(1.0f, -9));
  EXPECT_EQ(cfp8_decode(0x38, {Cfp8Layout::e4m3, 7}), 1.0f);  // e=7, m=0
  EXPECT_EQ(cfp8_decode(0x3c, {Cfp8Layout::e5m2, 15}), 1.0f);  // e=15, m=0
  EXPECT_EQ(cfp8_encode(3.3f, {Cfp8Layout::e4m3, 7}), cfp8_encode(3.25f, {Cfp8Layout::e4m3, 7}));
}

TEST(Cfp8, EveryCodeOfEveryBiasRoundTrips) {
  for (Cfp8Layout l : kLayouts) {
    for (int bias = 0; bias <= kCfp8MaxBias; ++bias) {
      Cfp8Format f{l, bias};
      for (int c = 0; c < 256; ++c) {
        uint8_t code = static_cast<uint8_t>(c);
        float v = cfp8_decode(code, f);
        ASSERT_EQ(static_cast<double>(v), value_of(code, f)) << cfp8_layout_name(l) << " bias " << bias << " code " << c;
        ASSERT_TRUE(std::isfinite(v));
        // Exactly representable in bf16.
        ASSERT_EQ(round_to_bf16(v), v) << "code " << c << " bias " << bias;
        ASSERT_EQ(cfp8_encode(v, f), code) << cfp8_layout_name(l) << " bias " << bias << " code " << c;
      }
    }
  }
}

TEST(Cfp8, EncodingEqualsBruteForceNearest) {
  uint64_t s = 99;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return s >> 11;
  };
  for (Cfp8Layout l : kLayouts) {
    for (int bias : {0, 1, 7, 15, 20, 31, 47, 63}) {
      Cfp8Format f{l, bias};
      std::vector<float> xs;
      // Random magnitudes spanning the whole range (log-uniform) and both signs.
      for (int i = 0; i < 4000; ++i) {
        double u = static_cast<double>(next() % 1000000) / 1e6;
        double mag = std::ldexp(1.0, -bias - 6) * std::pow(2.0, u * 40);
        xs.push_back(static_cast<float>((next() & 1) ? mag : -mag));
      }
      // Every midpoint between neighbouring codes (ties), and values just around them.
      for (int c = 0; c < 127; ++c) {
        double mid = (value_of(c, f) + value_of(c + 1, f)) / 2;
        float fm = static_cast<float>(mid);
        xs.push_back(fm);
        xs.push_back(-fm);
        xs.push_back(std::nextafter(fm, 0.0f));
        xs.push_back(std::nextafter(fm, 1e30f));
      }
      // Saturation, zeros, specials and f32 denormals.
      float mx = cfp8_max(f);
      for (float x : {mx, std::nextafter(mx, 1e30f), mx * 1.0625f, mx * 4, 1e30f, 3.4e38f,
                      std::numeric_limits<float>::infinity(), 0.0f, -0.0f, 1e-40f, -1e-40f,
                      std::numeric_limits<float>::denorm_min(), cfp8_min_subnormal(f),
                      cfp8_min_subnormal(f) / 2, cfp8_min_subnormal(f) * 0.5000001f,
                      cfp8_min_subnormal(f) * 1.5f, cfp8_min_subnormal(f) * 8 /* smallest normal */,
                      cfp8_min_subnormal(f) * 7.5f}) {
        xs.push_back(x);
        xs.push_back(-x);
      }
      for (float x : xs) {
        uint8_t want = std::isinf(x) ? static_cast<uint8_t>(0x7f | (x < 0 ? 0x80 : 0)) : brute_force_nearest(x, f);
        ASSERT_EQ(cfp8_encode(x, f), want) << cfp8_layout_name(l) << " bias " << bias << " x=" << x;
      }
    }
  }
}

TEST(Cfp8, SaturatesAndHandlesNaN) {
  Cfp8Format f{Cfp8Layout::e4m3, 7};
  EXPECT_EQ(cfp8_encode(1e9f, f), 0x7f);
  EXPECT_EQ(cfp8_encode(-1e9f, f), 0xff);
  EXPECT_EQ(cfp8_decode(0x7f, f), 480.0f);
  EXPECT_EQ(cfp8_encode(496.0f, f), 0x7f);  // beyond max, would round up past it
  uint64_t before = cfp8_invalid_count();
  EXPECT_EQ(cfp8_encode(std::nanf(""), f), kCfp8NanCode);
  EXPECT_EQ(cfp8_encode_stochastic(-std::nanf(""), f, 123), kCfp8NanCode);
  EXPECT_EQ(cfp8_invalid_count(), before + 2);
}

TEST(Cfp8, SubnormalBoundaries) {
  for (Cfp8Layout l : kLayouts) {
    Cfp8Format f{l, 10};
    int M = f.mant_bits();
    float tiny = cfp8_min_subnormal(f);
    EXPECT_EQ(cfp8_encode(tiny, f), 0x01);
    EXPECT_EQ(cfp8_encode(tiny * 0.5f, f), 0x00);                           // tie -> even (0)
    EXPECT_EQ(cfp8_encode(std::nextafter(tiny * 0.5f, 1.0f), f), 0x01);     // just above
    EXPECT_EQ(cfp8_encode(-tiny * 0.25f, f), 0x80);                         // -0 keeps sign
    float largest_sub = tiny * static_cast<float>((1 << M) - 1);
    float smallest_normal = tiny * static_cast<float>(1 << M);
    EXPECT_EQ(cfp8_encode(largest_sub, f), (1 << M) - 1);
    EXPECT_EQ(cfp8_encode(smallest_normal, f), 1 << M);
    EXPECT_EQ(cfp8_decode(static_cast<uint8_t>(1 << M), f), smallest_normal);
  }
}

TEST(Cfp8, StochasticRoundingIsUnbiasedAndReproducible) {
  for (Cfp8Layout l : kLayouts) {
    Cfp8Format f{l, cfp8_default_bias(l)};
    // Values between neighbours, in the normal and subnormal ranges, both signs.
    for (float x : {1.1f, 1.3f, -2.7f, 100.3f, cfp8_min_subnormal(f) * 2.3f, -cfp8_min_subnormal(f) * 0.3f}) {
      uint8_t lo = cfp8_encode(x, f);
      double step = std::ldexp(1.0, -f.mant_bits()) * std::fabs(cfp8_decode(lo, f));
      if (step == 0) step = cfp8_min_subnormal(f);
      const int n = 200000;
      double sum = 0;
      uint32_t key = cfp8_sr_key(7, 0);
      for (int i = 0; i < n; ++i) sum += cfp8_decode(cfp8_encode_stochastic(x, f, cfp8_sr_bits(key, i)), f);
      double mean = sum / n;
      // Bernoulli between two neighbours one ulp (<= 2*step) apart: sd <= step/sqrt(n); 6 sigma.
      double tol = 6 * 2 * step / std::sqrt(static_cast<double>(n));
      EXPECT_NEAR(mean, x, tol) << cfp8_layout_name(l) << " x=" << x;
    }
    // Exact values never move.
    for (int c = 0; c < 256; ++c) {
      float v = cfp8_decode(static_cast<uint8_t>(c), f);
      for (uint32_t r : {0u, 1u, 0x7fffffu, 0xffffffffu, 0x12345678u}) {
        ASSERT_EQ(cfp8_encode_stochastic(v, f, r), static_cast<uint8_t>(c)) << c;
      }
    }
    // Reproducible for a seed; different seeds differ.
    std::vector<uint8_t> a, b, c;
    for (uint32_t i = 0; i < 1000; ++i) {
      a.push_back(cfp8_encode_stochastic(1.1f, f, cfp8_sr_bits(cfp8_sr_key(1, 0), i)));
      b.push_back(cfp8_encode_stochastic(1.1f, f, cfp8_sr_bits(cfp8_sr_key(1, 0), i)));
      c.push_back(cfp8_encode_stochastic(1.1f, f, cfp8_sr_bits(cfp8_sr_key(2, 0), i)));
    }
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
  }
}

}  // namespace
}  // namespace tessera
