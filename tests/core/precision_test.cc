#include <tessera/core/precision.h>
#include <tessera/core/random.h>

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace tessera {
namespace {

constexpr Cfp8Layout kLayouts[] = {Cfp8Layout::e4m3, Cfp8Layout::e5m2};

// The definition, by brute force: the largest bias in 0..63 whose max covers amax * 2^margin;
// 0 when none does.
int brute_force_bias(float amax, Cfp8Layout layout, int margin) {
  double need = static_cast<double>(amax) * std::ldexp(1.0, margin);
  int best = -1;
  for (int b = 0; b <= kCfp8MaxBias; ++b) {
    if (static_cast<double>(cfp8_max({layout, b})) >= need) best = std::max(best, b);
  }
  return best < 0 ? 0 : best;
}

std::vector<float> interesting_amax_values() {
  std::vector<float> v;
  // Powers of two, every cfp8_max of both layouts, and their float neighbours.
  for (int k = -60; k <= 40; ++k) v.push_back(std::ldexp(1.0f, k));
  for (Cfp8Layout l : kLayouts) {
    for (int b = 0; b <= kCfp8MaxBias; ++b) {
      float m = cfp8_max({l, b});
      v.push_back(m);
      v.push_back(std::nextafter(m, 0.f));
      v.push_back(std::nextafter(m, std::numeric_limits<float>::infinity()));
    }
  }
  // Log-uniform over 1e-25 .. 1e12.
  for (uint64_t i = 0; i < 2000; ++i) v.push_back(static_cast<float>(std::pow(10.0, -25 + 37 * random_uniform(7, i))));
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(std::numeric_limits<float>::min());
  v.push_back(std::numeric_limits<float>::max());
  v.push_back(480.f);
  v.push_back(114688.f);
  return v;
}

TEST(Cfp8BiasForAmax, MatchesBruteForce) {
  std::vector<float> values = interesting_amax_values();
  for (Cfp8Layout l : kLayouts) {
    for (int margin : {0, 1, 3, -1}) {
      for (float a : values) {
        int got = cfp8_bias_for_amax(a, l, margin);
        ASSERT_EQ(got, brute_force_bias(a, l, margin))
            << cfp8_layout_name(l) << " amax=" << a << " margin=" << margin;
        ASSERT_GE(got, 0);
        ASSERT_LE(got, kCfp8MaxBias);
        // The defining property, stated directly (unless even bias 0 cannot cover it).
        double need = static_cast<double>(a) * std::ldexp(1.0, margin);
        if (static_cast<double>(cfp8_max({l, 0})) >= need) {
          ASSERT_GE(static_cast<double>(cfp8_max({l, got})), need);
          if (got < kCfp8MaxBias) {
            ASSERT_LT(static_cast<double>(cfp8_max({l, got + 1})), need);
          }
        }
      }
    }
  }
}

TEST(Cfp8BiasForAmax, HandPickedValues) {
  // e4m3 max at bias b is 15 * 2^(12 - b): bias 7 -> 480, bias 15 -> 1.875.
  EXPECT_EQ(cfp8_bias_for_amax(480.f, Cfp8Layout::e4m3, 0), 7);
  EXPECT_EQ(cfp8_bias_for_amax(481.f, Cfp8Layout::e4m3, 0), 6);
  EXPECT_EQ(cfp8_bias_for_amax(240.f, Cfp8Layout::e4m3, 0), 8);
  EXPECT_EQ(cfp8_bias_for_amax(1.f, Cfp8Layout::e4m3, 0), 15);
  EXPECT_EQ(cfp8_bias_for_amax(1.f, Cfp8Layout::e4m3, 2), 13);
  // e5m2 max at bias b is 7 * 2^(29 - b): bias 15 -> 114688.
  EXPECT_EQ(cfp8_bias_for_amax(114688.f, Cfp8Layout::e5m2, 0), 15);
  EXPECT_EQ(cfp8_bias_for_amax(1.f, Cfp8Layout::e5m2, 0), 31);
  // Tiny values get the finest bias; huge ones saturate at bias 0.
  EXPECT_EQ(cfp8_bias_for_amax(1e-30f, Cfp8Layout::e4m3, 0), 63);
  EXPECT_EQ(cfp8_bias_for_amax(1e30f, Cfp8Layout::e4m3, 0), 0);
  EXPECT_EQ(cfp8_bias_for_amax(1e30f, Cfp8Layout::e5m2, 0), 0);
}

TEST(Cfp8BiasForAmax, ZeroNanInfGiveTheDefaultBias) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (Cfp8Layout l : kLayouts) {
    for (int margin : {0, 2}) {
      for (float a : {0.f, -0.f, nan, -nan, inf, -inf, -1.f}) {
        EXPECT_EQ(cfp8_bias_for_amax(a, l, margin), cfp8_default_bias(l))
            << cfp8_layout_name(l) << " amax=" << a << " margin=" << margin;
      }
    }
  }
  EXPECT_EQ(cfp8_default_bias(Cfp8Layout::e4m3), 7);
  EXPECT_EQ(cfp8_default_bias(Cfp8Layout::e5m2), 15);
}

TEST(AmaxHistory, KeepsTheLastN) {
  AmaxHistory h(3);
  EXPECT_TRUE(h.empty());
  EXPECT_EQ(h.max(), 0.f);
  h.push(5);
  EXPECT_EQ(h.max(), 5.f);
  h.push(1);
  h.push(2);
  EXPECT_EQ(h.values(), (std::deque<float>{5, 1, 2}));
  EXPECT_EQ(h.max(), 5.f);
  h.push(3);  // 5 leaves
  EXPECT_EQ(h.values(), (std::deque<float>{1, 2, 3}));
  EXPECT_EQ(h.max(), 3.f);
  for (int i = 10; i < 20; ++i) h.push(static_cast<float>(i));
  EXPECT_EQ(h.values(), (std::deque<float>{17, 18, 19}));
  EXPECT_FALSE(h.empty());
}

std::vector<float> tensor_with_amax(float a) {
  // Signed values, the largest magnitude negative, so amax is |min|.
  return {0.25f * a, -a, 0.5f * a, 0.f};
}

TEST(PrecisionState, BiasFollowsAGrowingAmax) {
  Cfp8Policy p;
  p.history = 4;
  PrecisionState st(p);
  int prev = 64;
  for (int k = 0; k <= 12; ++k) {
    float a = std::ldexp(1.0f, k);
    std::vector<float> x = tensor_with_amax(a);
    int bias = st.observe({3, 0}, x.data(), x.size(), Cfp8Layout::e4m3);
    EXPECT_EQ(bias, cfp8_bias_for_amax(a, Cfp8Layout::e4m3, 0)) << "amax " << a;
    EXPECT_EQ(bias, 15 - k) << "e4m3 max 1.875 * 2^(15 - bias) must cover 2^" << k;
    EXPECT_LT(bias, prev) << "bias decreases as the values grow";
    prev = bias;
  }
  // The gradient layout has its own range.
  std::vector<float> x = tensor_with_amax(1.0f);
  EXPECT_EQ(st.observe({3, 1}, x.data(), x.size(), Cfp8Layout::e5m2), 31);
}

TEST(PrecisionState, BiasRisesOnlyAfterLargeValuesLeaveTheWindow) {
  Cfp8Policy p;
  p.history = 4;
  PrecisionState st(p);
  std::pair<int, int> key{7, 1};
  std::vector<float> big = tensor_with_amax(1024.f), small = tensor_with_amax(1.f);
  EXPECT_EQ(st.observe(key, big.data(), big.size(), Cfp8Layout::e4m3), 5);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(st.observe(key, small.data(), small.size(), Cfp8Layout::e4m3), 5)
        << "1024 is still in the window after " << i + 1 << " small steps";
  }
  EXPECT_EQ(st.observe(key, small.data(), small.size(), Cfp8Layout::e4m3), 15) << "the 4th small step evicts 1024";
  EXPECT_EQ(st.histories().at(key).values(), (std::deque<float>{1, 1, 1, 1}));

  // A gradual decline: the bias tracks the max of the last 4.
  PrecisionState st2(p);
  std::vector<int> biases;
  for (int k = 10; k >= 0; --k) {
    std::vector<float> x = tensor_with_amax(std::ldexp(1.0f, k));
    biases.push_back(st2.observe(key, x.data(), x.size(), Cfp8Layout::e4m3));
  }
  // Observation j (amax 2^(10-j)) sees max 2^(10 - max(j-3, 0)) -> bias 5 + max(j-3, 0).
  for (size_t j = 0; j < biases.size(); ++j) {
    EXPECT_EQ(biases[j], 5 + std::max<int>(static_cast<int>(j) - 3, 0)) << "observation " << j;
  }
}

TEST(PrecisionState, KeysAreIndependentNonFiniteIsSkippedMarginApplies) {
  Cfp8Policy p;
  p.history = 2;
  p.margin = 2;
  PrecisionState st(p);
  std::vector<float> big = tensor_with_amax(256.f), small = tensor_with_amax(1.f);
  EXPECT_EQ(st.observe({1, 0}, big.data(), big.size(), Cfp8Layout::e4m3), 5);    // 1024 needed
  EXPECT_EQ(st.observe({2, 0}, small.data(), small.size(), Cfp8Layout::e4m3), 13);  // 4 needed
  std::vector<float> bad = {1.f, std::numeric_limits<float>::infinity()};
  EXPECT_EQ(st.observe({2, 0}, bad.data(), bad.size(), Cfp8Layout::e4m3), 13) << "Inf is not recorded";
  bad[1] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(st.observe({2, 0}, bad.data(), bad.size(), Cfp8Layout::e4m3), 13) << "NaN is not recorded";
  EXPECT_EQ(st.histories().at({2, 0}).values().size(), 1u);
  // A first observation that is not finite: empty history, default bias.
  EXPECT_EQ(st.observe({9, 9}, bad.data(), bad.size(), Cfp8Layout::e5m2), 15);
  EXPECT_EQ(st.histories().size(), 3u);
}

// predict() is what the one-pass matmul encoder relies on (core/ops_linalg.cc): whenever the
// coming amax is finite and no larger than the values the history keeps, observe_amax() returns
// the predicted bias. Over growing, shrinking, spiking and non-finite sequences, and every
// history length up to 5.
TEST(PrecisionState, PredictionHoldsWhenAmaxStaysWithinTheHistory) {
  uint64_t draw = 0;
  for (int length = 1; length <= 5; ++length) {
    Cfp8Policy p;
    p.history = length;
    PrecisionState st(p);
    AmaxHistory mirror(length);
    const std::pair<int, int> key{7, 1};
    EXPECT_EQ(st.predict(key, Cfp8Layout::e4m3), -1) << "no history, no prediction";
    int checked = 0;
    for (int step = 0; step < 400; ++step) {
      ++draw;
      float a = std::ldexp(1.0f + static_cast<float>(random_uniform(21, draw)),
                           static_cast<int>(random_bits(22, draw) % 24) - 12);
      if (step % 37 == 5) a = std::numeric_limits<float>::infinity();
      if (step % 41 == 9) a = std::nanf("");
      const int guess = st.predict(key, Cfp8Layout::e4m3);
      const float kept = mirror.max_kept_after_push();
      const int bias = st.observe_amax(key, a, Cfp8Layout::e4m3);
      if (std::isfinite(a)) mirror.push(a);
      EXPECT_EQ(bias, cfp8_bias_for_amax(mirror.max(), Cfp8Layout::e4m3, 0));
      if (step > 0 && std::isfinite(a) && a <= kept) {
        EXPECT_EQ(guess, bias) << "length " << length << " step " << step;
        ++checked;
      }
    }
    // With a history of one, every value is evicted by the next: nothing to predict from.
    if (length >= 2) {
      EXPECT_GT(checked, 50) << "length " << length;
    }
  }
}

TEST(PrecisionState, AmaxIsRememberedPerValueForOneRun) {
  PrecisionState st;
  std::vector<float> x = tensor_with_amax(3.0f), y = tensor_with_amax(5.0f);
  EXPECT_EQ(st.amax_of(4, x.data(), x.size()), 3.0f);
  float a = 0;
  EXPECT_TRUE(st.known_amax(4, x.data(), x.size(), a));
  EXPECT_EQ(a, 3.0f);
  // Another buffer or size under the same id is not taken for it.
  EXPECT_FALSE(st.known_amax(4, y.data(), y.size(), a));
  EXPECT_FALSE(st.known_amax(4, x.data(), x.size() - 1, a));
  EXPECT_EQ(st.amax_of(4, y.data(), y.size()), 5.0f);
  st.begin_run();
  EXPECT_FALSE(st.known_amax(4, y.data(), y.size(), a)) << "a new run forgets";
  // ... but not that value 4's amax is wanted, so its producer can measure it next time.
  EXPECT_TRUE(st.wants_amax(4));
  EXPECT_FALSE(st.wants_amax(5));
  st.remember_amax(5, y.data(), y.size(), 5.0f);
  EXPECT_FALSE(st.wants_amax(5)) << "remembered by a producer, never asked for";
}

TEST(PrecisionState, NarrowCopiesAreSharedWithinARunOnly) {
  PrecisionState st;
  std::vector<float> w = tensor_with_amax(2.0f), other = tensor_with_amax(2.0f);
  Tensor t = Tensor::empty(Shape{static_cast<int64_t>(w.size())}, DType::bf16), got;
  EXPECT_FALSE(st.cached_narrow(7, w.data(), w.size(), DType::bf16, -1, got));
  st.cache_narrow(7, w.data(), w.size(), DType::bf16, -1, t);
  ASSERT_TRUE(st.cached_narrow(7, w.data(), w.size(), DType::bf16, -1, got));
  EXPECT_EQ(got.raw_data(), t.raw_data()) << "the same storage, not a copy";
  // Any difference in source, size, type or cfp8 bias is a miss.
  EXPECT_FALSE(st.cached_narrow(7, other.data(), other.size(), DType::bf16, -1, got));
  EXPECT_FALSE(st.cached_narrow(7, w.data(), w.size() - 1, DType::bf16, -1, got));
  EXPECT_FALSE(st.cached_narrow(7, w.data(), w.size(), DType::bf16, 7, got));
  EXPECT_FALSE(st.cached_narrow(7, w.data(), w.size(), DType::cfp8_e4m3, -1, got));
  EXPECT_FALSE(st.cached_narrow(8, w.data(), w.size(), DType::bf16, -1, got));
  st.begin_run();  // the optimizer may have changed the weights since
  EXPECT_FALSE(st.cached_narrow(7, w.data(), w.size(), DType::bf16, -1, got));
}

TEST(Precision, Names) {
  for (Precision p : {Precision::fp32, Precision::bf16, Precision::cfp8}) {
    EXPECT_EQ(precision_from_name(precision_name(p)), p);
  }
  EXPECT_EQ(precision_from_name("f32"), Precision::fp32);
  EXPECT_THROW(precision_from_name("fp16"), ValueError);
  try {
    precision_from_name("fp16");
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'fp16'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(precision_from_name(""), ValueError);
  EXPECT_THROW(precision_from_name("BF16"), ValueError);
}

}  // namespace
}  // namespace tessera
