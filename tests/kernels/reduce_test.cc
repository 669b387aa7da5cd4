// sum_axis, sum, sum_squares and amax at every ISA rung: exact on dyadic data (so any missed,
// doubled or misplaced element shows), accurate on random data, NaN and Inf handling.
#include <tessera/kernels/reduce.h>

#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

namespace tessera::kernels {
namespace {

using testing::all_close;
using testing::dyadic;
using testing::kLengths;
using testing::scalar_close;
using testing::uniform;

class ReduceRung : public testing::RungTest {};

std::vector<double> ref_sum_axis(const std::vector<float>& x, size_t outer, size_t axis, size_t inner) {
  std::vector<double> y(outer * inner, 0.0);
  for (size_t o = 0; o < outer; ++o) {
    for (size_t a = 0; a < axis; ++a) {
      for (size_t i = 0; i < inner; ++i) y[o * inner + i] += x[(o * axis + a) * inner + i];
    }
  }
  return y;
}

TEST_P(ReduceRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&reduce_fns(), expected(reduce_fns_scalar(), reduce_fns_avx2(), reduce_fns_avx512()));
}

TEST_P(ReduceRung, SumExactOnDyadicData) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto x = dyadic(n, 64, 64, n);
    double want = 0;
    for (float v : x) want += v;
    EXPECT_EQ(sum(x.data(), n), want);
  }
}

TEST_P(ReduceRung, MillionOnesSumExactly) {
  std::vector<float> ones(1000000, 1.0f);
  EXPECT_EQ(sum(ones.data(), ones.size()), 1e6f);
  float y[3];
  sum_axis(ones.data(), y, 1, ones.size() / 2, 2);
  EXPECT_EQ(y[0], 5e5f);
  EXPECT_EQ(y[1], 5e5f);
}

TEST_P(ReduceRung, SumIsPairwiseAccurate) {
  // Sequential f32 summation of 4e6 copies of 0.1f is off by about 1e-2 relative; pairwise is
  // within a few ulps.
  std::vector<float> x(4000000, 0.1f);
  EXPECT_TRUE(scalar_close(sum(x.data(), x.size()), 4e6 * double(0.1f), 1e-6, 0));
  auto r = uniform(1000003, 0, 1, 5);
  double want = 0;
  for (float v : r) want += v;
  EXPECT_TRUE(scalar_close(sum(r.data(), r.size()), want, 1e-6, 0));
}

TEST_P(ReduceRung, SumAxisGrid) {
  // Small shapes, then shapes that take the many-task and the split-axis paths.
  std::vector<std::tuple<size_t, size_t, size_t>> shapes;
  for (size_t outer : {1, 2, 5}) {
    for (size_t axis : {0, 1, 7, 33, 1000}) {
      for (size_t inner : {1, 3, 16, 17, 1025}) shapes.emplace_back(outer, axis, inner);
    }
  }
  shapes.insert(shapes.end(), {{1, 200003, 1}, {3, 70001, 3}, {2, 5003, 257}, {1, 3, 100003},
                               {1000, 101, 1}, {37, 300, 17}, {1, 2000, 2049}});
  for (auto [outer, axis, inner] : shapes) {
    SCOPED_TRACE(::testing::Message() << outer << "x" << axis << "x" << inner);
    auto x = dyadic(outer * axis * inner, 64, 64, outer + 7 * axis + 13 * inner);
    std::vector<float> y(outer * inner, -1.0f);
    sum_axis(x.data(), y.data(), outer, axis, inner);
    EXPECT_TRUE(all_close(y, ref_sum_axis(x, outer, axis, inner), 0, 0));
  }
}

TEST_P(ReduceRung, SumAxisRandomAccuracy) {
  for (auto [outer, axis, inner] : {std::tuple<size_t, size_t, size_t>{2, 100003, 1}, {1, 100003, 5},
                                    {4, 1000, 100}}) {
    auto x = uniform(outer * axis * inner, -1, 1, axis);
    std::vector<double> scale(outer * inner, 0.0);  // sum of |terms|
    for (size_t o = 0; o < outer; ++o) {
      for (size_t a = 0; a < axis; ++a) {
        for (size_t i = 0; i < inner; ++i) scale[o * inner + i] += std::fabs(x[(o * axis + a) * inner + i]);
      }
    }
    std::vector<float> y(outer * inner);
    sum_axis(x.data(), y.data(), outer, axis, inner);
    auto want = ref_sum_axis(x, outer, axis, inner);
    for (size_t i = 0; i < y.size(); ++i) {
      EXPECT_LE(std::fabs(y[i] - want[i]), 1e-6 * scale[i]) << i;
    }
  }
}

TEST_P(ReduceRung, SumSquares) {
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto x = dyadic(n, 8, 8, 3 * n + 1);  // squares are multiples of 1/64, sums exact
    double want = 0;
    for (float v : x) want += double(v) * v;
    EXPECT_EQ(sum_squares(x.data(), n), want);
    auto r = uniform(n, -2, 2, n);
    want = 0;
    for (float v : r) want += double(v) * v;
    EXPECT_TRUE(scalar_close(sum_squares(r.data(), n), want, 1e-6, 0));
  }
}

TEST_P(ReduceRung, Amax) {
  EXPECT_EQ(amax(nullptr, 0), 0.0f);
  for (size_t n : kLengths) {
    if (n == 0) continue;
    SCOPED_TRACE(n);
    auto x = uniform(n, -100, 100, n + 9);
    float want = 0;
    for (float v : x) want = std::max(want, std::fabs(v));
    EXPECT_EQ(amax(x.data(), n), want);
    // The maximum is negative and sits at every interesting position in turn.
    for (size_t pos : {size_t{0}, n / 2, n - 1}) {
      auto y = x;
      y[pos] = -1000.5f;
      EXPECT_EQ(amax(y.data(), n), 1000.5f) << pos;
      y[pos] = -std::numeric_limits<float>::infinity();
      EXPECT_EQ(amax(y.data(), n), std::numeric_limits<float>::infinity()) << pos;
      y[pos] = std::numeric_limits<float>::quiet_NaN();
      EXPECT_TRUE(std::isnan(amax(y.data(), n))) << pos;
      y[pos] = -std::numeric_limits<float>::quiet_NaN();
      EXPECT_TRUE(std::isnan(amax(y.data(), n))) << pos;
    }
  }
}

TEST_P(ReduceRung, InfAndNanPropagateThroughSums) {
  for (size_t n : {size_t{17}, size_t{100003}}) {
    std::vector<float> x(n, 1.0f);
    x[n - 2] = std::numeric_limits<float>::infinity();
    EXPECT_EQ(sum(x.data(), n), std::numeric_limits<float>::infinity());
    EXPECT_EQ(sum_squares(x.data(), n), std::numeric_limits<float>::infinity());
    x[n / 3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(sum(x.data(), n)));
    EXPECT_TRUE(std::isnan(sum_squares(x.data(), n)));
  }
}

TESSERA_INSTANTIATE_RUNGS(ReduceRung);

}  // namespace
}  // namespace tessera::kernels
