// add, mul, scale, axpy, bias_add and bias_grad at every ISA rung against double references.
#include <tessera/core/bf16.h>
#include <tessera/kernels/elementwise.h>

#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace tessera::kernels {
namespace {

using testing::all_close;
using testing::kLengths;
using testing::uniform;

// One correctly rounded f32 operation: within half an ulp of the exact value.
constexpr double kOneOp = 6.0e-8;

class ElementwiseRung : public testing::RungTest {};

TEST_P(ElementwiseRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&elementwise_fns(),
            expected(elementwise_fns_scalar(), elementwise_fns_avx2(), elementwise_fns_avx512()));
}

TEST_P(ElementwiseRung, AddMulScaleAxpy) {
  const float alpha = -1.75f;
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto a = uniform(n, -10, 10, 1 + n), b = uniform(n, -10, 10, 2 + n);
    std::vector<float> y(n);
    std::vector<double> want(n), mag(n);

    add(a.data(), b.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) want[i] = double(a[i]) + b[i];
    EXPECT_TRUE(all_close(y, want, kOneOp, 0));

    mul(a.data(), b.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) want[i] = double(a[i]) * b[i];
    EXPECT_TRUE(all_close(y, want, kOneOp, 0));

    scale(alpha, a.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) want[i] = alpha * double(a[i]);
    EXPECT_TRUE(all_close(y, want, kOneOp, 0));

    // axpy: the scalar rung rounds alpha*x before adding, so allow an ulp of |alpha x| too.
    y = b;
    axpy(alpha, a.data(), y.data(), n);
    for (size_t i = 0; i < n; ++i) {
      want[i] = double(b[i]) + alpha * double(a[i]);
      mag[i] = std::fabs(double(b[i])) + std::fabs(alpha * double(a[i]));
    }
    EXPECT_TRUE(all_close(y, want, 2 * kOneOp, 0, mag));
  }
}

TEST_P(ElementwiseRung, InPlace) {
  for (size_t n : {size_t{17}, size_t{100003}}) {
    auto a = uniform(n, -3, 3, 11), b = uniform(n, -3, 3, 12);
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = double(a[i]) + b[i];
    add(a.data(), b.data(), a.data(), n);  // y == a
    EXPECT_TRUE(all_close(a, want, kOneOp, 0));

    auto c = uniform(n, -3, 3, 13);
    for (size_t i = 0; i < n; ++i) want[i] = double(c[i]) * c[i];
    mul(c.data(), c.data(), c.data(), n);  // y == a == b
    EXPECT_TRUE(all_close(c, want, kOneOp, 0));

    auto d = uniform(n, -3, 3, 14);
    for (size_t i = 0; i < n; ++i) want[i] = 0.5 * d[i];
    scale(0.5f, d.data(), d.data(), n);
    EXPECT_TRUE(all_close(d, want, 0, 0));  // exact
  }
}

TEST_P(ElementwiseRung, NanPropagatesEvenWithZeroAlpha) {
  std::vector<float> x(33, 1.0f), y(33, 2.0f);
  x[31] = std::numeric_limits<float>::quiet_NaN();
  axpy(0.0f, x.data(), y.data(), y.size());
  EXPECT_TRUE(std::isnan(y[31]));
  EXPECT_EQ(y[30], 2.0f);
}

TEST_P(ElementwiseRung, BiasAdd) {
  for (size_t rows : {0, 1, 3, 17, 300}) {
    for (size_t cols : {0, 1, 7, 15, 16, 17, 33, 1000}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      auto x = uniform(rows * cols, -5, 5, rows * 7 + cols);
      auto b = uniform(cols, -5, 5, cols);
      std::vector<double> want(rows * cols);
      for (size_t r = 0; r < rows; ++r) {
        for (size_t c = 0; c < cols; ++c) want[r * cols + c] = double(x[r * cols + c]) + b[c];
      }
      std::vector<float> y(rows * cols);
      bias_add(x.data(), b.data(), y.data(), rows, cols);
      EXPECT_TRUE(all_close(y, want, kOneOp, 0));
      bias_add(x.data(), b.data(), x.data(), rows, cols);  // in place
      EXPECT_TRUE(all_close(x, want, kOneOp, 0));
    }
  }
}

TEST_P(ElementwiseRung, BiasGrad) {
  for (size_t rows : {0, 1, 3, 17, 300, 5000}) {
    for (size_t cols : {1, 7, 16, 17, 33, 1000, 1031}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      // Multiples of 1/64 with |partial sums| < 2^17: every order of summation is exact.
      auto dy = testing::dyadic(rows * cols, 64, 64, rows + 31 * cols);
      std::vector<double> want(cols, 0.0);
      for (size_t r = 0; r < rows; ++r) {
        for (size_t c = 0; c < cols; ++c) want[c] += dy[r * cols + c];
      }
      std::vector<float> db(cols, 123.0f);
      bias_grad(dy.data(), db.data(), rows, cols);
      EXPECT_TRUE(all_close(db, want, 0, 0));
    }
  }
}

TEST_P(ElementwiseRung, BiasAddBf16EqualsWideningFirst) {
  for (auto [rows, cols] : {std::pair<size_t, size_t>{0, 3}, {1, 1}, {3, 17}, {17, 33}, {300, 1000}}) {
    auto xf = uniform(rows * cols, -5, 5, rows + cols);
    auto b = uniform(cols, -1, 1, cols);
    std::vector<uint16_t> xb(rows * cols);
    std::vector<float> wide(rows * cols), want(rows * cols), got(rows * cols);
    for (size_t i = 0; i < xb.size(); ++i) xb[i] = f32_to_bf16(xf[i]), wide[i] = bf16_to_f32(xb[i]);
    bias_add(wide.data(), b.data(), want.data(), rows, cols);
    bias_add_bf16(xb.data(), b.data(), got.data(), rows, cols);
    EXPECT_EQ(got, want) << rows << "x" << cols;
  }
}

TESSERA_INSTANTIATE_RUNGS(ElementwiseRung);

}  // namespace
}  // namespace tessera::kernels
