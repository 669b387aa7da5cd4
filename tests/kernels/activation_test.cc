// relu, gelu (exact erf form), their gradients and the vectorized erf at every ISA rung, against
// double-precision references; GELU's gradient also against finite differences in double.
#include <tessera/core/bf16.h>
#include <tessera/kernels/activation.h>

#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace tessera::kernels {
namespace {

using testing::all_close;
using testing::kLengths;
using testing::uniform;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

double normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double gelu_ref(double x) { return x * normal_cdf(x); }
double normal_pdf(double x) { return std::exp(-0.5 * x * x) / std::sqrt(2 * M_PI); }

// Mostly [-12, 12], with a share of tail, near-zero and denormal-result points.
std::vector<float> gelu_inputs(size_t n, uint64_t seed) {
  auto x = uniform(n, -12, 12, seed);
  for (size_t i = 0; i < n; i += 5) x[i] *= 1e-3f;
  for (size_t i = 3; i < n; i += 11) x[i] = -13.5f - 0.1f * static_cast<float>(i % 10);
  return x;
}

class ActivationRung : public testing::RungTest {};

TEST_P(ActivationRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&activation_fns(),
            expected(activation_fns_scalar(), activation_fns_avx2(), activation_fns_avx512()));
}

TEST_P(ActivationRung, Relu) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto x = uniform(n, -1, 1, n), dy = uniform(n, -1, 1, n + 1);
    if (n > 3) x[n - 1] = kNaN, x[n - 2] = -0.0f, x[n - 3] = 0.0f, dy[n - 3] = kNaN;
    std::vector<float> y(n), dx(n);
    relu(x.data(), y.data(), n);
    relu_backward(x.data(), dy.data(), dx.data(), n);
    for (size_t i = 0; i < n; ++i) {
      float want = x[i] < 0 ? 0.0f : x[i];  // NaN stays NaN, -0 stays -0
      ASSERT_EQ(std::memcmp(&y[i], &want, 4), 0) << i << ": " << y[i] << " vs " << want;
      ASSERT_EQ(dx[i], x[i] > 0 ? dy[i] : 0.0f) << i;  // NaN dy where x <= 0 gives 0
    }
    relu(x.data(), x.data(), n);  // in place
    EXPECT_TRUE(testing::same_bits(x, y));
  }
}

TEST_P(ActivationRung, GeluForward) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto x = gelu_inputs(n, n + 3);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = gelu_ref(x[i]);
    std::vector<float> y(n);
    gelu(x.data(), y.data(), n);
    // atol covers results below 2^-126, which the AVX2 rung flushes to zero.
    EXPECT_TRUE(all_close(y, want, 2e-6, 1.2e-38));
    gelu(x.data(), x.data(), n);  // in place
    EXPECT_TRUE(all_close(x, want, 2e-6, 1.2e-38));
  }
}

TEST_P(ActivationRung, GeluBackward) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto x = gelu_inputs(n, n + 5), dy = uniform(n, -2, 2, n + 6);
    std::vector<double> want(n), mag(n);
    for (size_t i = 0; i < n; ++i) {
      double phi = normal_cdf(x[i]), tail = x[i] * normal_pdf(x[i]);
      want[i] = dy[i] * (phi + tail);
      mag[i] = std::fabs(dy[i]) * (std::fabs(phi) + std::fabs(tail));  // cancellation near -0.75
    }
    std::vector<float> dx(n);
    gelu_backward(x.data(), dy.data(), dx.data(), n);
    EXPECT_TRUE(all_close(dx, want, 2e-6, 1.2e-38, mag));
    gelu_backward(x.data(), dy.data(), dy.data(), n);  // in place, dx == dy
    EXPECT_TRUE(all_close(dy, want, 2e-6, 1.2e-38, mag));
  }
}

TEST_P(ActivationRung, GeluBackwardMatchesFiniteDifferences) {
  // Central differences of the double-precision GELU, h = 1e-5: truncation ~1e-10.
  std::vector<float> x;
  for (float v = -8.0f; v <= 8.0f; v += 0.0625f) x.push_back(v);
  std::vector<float> ones(x.size(), 1.0f), dx(x.size());
  gelu_backward(x.data(), ones.data(), dx.data(), x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-5;
    double fd = (gelu_ref(x[i] + h) - gelu_ref(x[i] - h)) / (2 * h);
    EXPECT_NEAR(dx[i], fd, 2e-6 * std::max(1.0, std::fabs(fd))) << "x = " << x[i];
  }
}

TEST_P(ActivationRung, GeluSpecialValues) {
  std::vector<float> x = {kInf, -kInf, kNaN, 0.0f, -0.0f, 20.0f, -20.0f, 1e-30f};
  std::vector<float> y(x.size()), d(x.size()), ones(x.size(), 1.0f);
  gelu(x.data(), y.data(), x.size());
  gelu_backward(x.data(), ones.data(), d.data(), x.size());
  EXPECT_EQ(y[0], kInf);
  EXPECT_TRUE(std::isnan(y[1]));  // -inf * Phi(-inf) = -inf * 0, as PyTorch's formula
  EXPECT_TRUE(std::isnan(y[2]));
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_EQ(y[4], 0.0f);
  EXPECT_EQ(y[5], 20.0f);
  EXPECT_EQ(y[6], 0.0f);
  EXPECT_FLOAT_EQ(y[7], 0.5e-30f);
  EXPECT_EQ(d[0], 1.0f);
  EXPECT_EQ(d[1], 0.0f);
  EXPECT_TRUE(std::isnan(d[2]));
  EXPECT_EQ(d[3], 0.5f);
  EXPECT_EQ(d[5], 1.0f);
  EXPECT_EQ(d[6], 0.0f);
}

TEST_P(ActivationRung, ErfAbsoluteErrorBelow1e6) {
  std::vector<float> x;
  for (int i = -120000; i <= 120000; ++i) x.push_back(static_cast<float>(i) * 5e-5f);
  for (float v : {1e-30f, -1e-38f, 1e-45f, 7.0f, -9.5f, 30.0f, kInf, -kInf}) x.push_back(v);
  std::vector<float> y(x.size());
  erf_elementwise(x.data(), y.data(), x.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, std::fabs(y[i] - std::erf(double(x[i]))));
  EXPECT_LT(worst, 1e-6);
  RecordProperty("erf_max_abs_error", (::testing::Message() << worst).GetString());
  float nan = kNaN, out = 0;
  erf_elementwise(&nan, &out, 1);
  EXPECT_TRUE(std::isnan(out));
}

TEST_P(ActivationRung, Bf16InputsEqualWideningFirst) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto xf = gelu_inputs(n, n + 17);
    std::vector<uint16_t> xb(n);
    for (size_t i = 0; i < n; ++i) xb[i] = f32_to_bf16(xf[i]);
    if (n > 2) xb[1] = 0x7fc1, xb[2] = 0xff80;  // NaN, -inf
    std::vector<float> wide(n), want(n), got(n);
    for (size_t i = 0; i < n; ++i) wide[i] = bf16_to_f32(xb[i]);
    relu(wide.data(), want.data(), n);
    relu_bf16(xb.data(), got.data(), n);
    EXPECT_TRUE(testing::same_bits(got, want));
    gelu(wide.data(), want.data(), n);
    gelu_bf16(xb.data(), got.data(), n);
    EXPECT_TRUE(testing::same_bits(got, want));
  }
}

TESSERA_INSTANTIATE_RUNGS(ActivationRung);

}  // namespace
}  // namespace tessera::kernels
