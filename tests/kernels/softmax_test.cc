// softmax, its gradient and softmax cross-entropy at every ISA rung against double references;
// label validation; the cross-entropy gradient against finite differences of the loss.
#include <tessera/core/error.h>
#include <tessera/kernels/softmax.h>

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
// exp(x - max) sees x - max rounded to f32 (|x - max| <= 40 here: ~1e-6 relative) plus a few ulp.
constexpr double kProbRtol = 5e-6;
constexpr double kFlush = 2e-38;  // AVX2 flushes probabilities below 2^-126

struct Ref {
  std::vector<double> p;
  std::vector<double> lse;  // logsumexp per row
};
Ref ref_softmax(const std::vector<float>& x, size_t rows, size_t cols) {
  Ref r{std::vector<double>(rows * cols), std::vector<double>(rows)};
  for (size_t i = 0; i < rows; ++i) {
    double m = -INFINITY, s = 0;
    for (size_t j = 0; j < cols; ++j) m = std::max(m, double(x[i * cols + j]));
    for (size_t j = 0; j < cols; ++j) s += std::exp(x[i * cols + j] - m);
    for (size_t j = 0; j < cols; ++j) r.p[i * cols + j] = std::exp(x[i * cols + j] - m) / s;
    r.lse[i] = m + std::log(s);
  }
  return r;
}

std::vector<int32_t> random_labels(size_t rows, size_t classes, uint64_t seed) {
  testing::Rng rng(seed);
  std::vector<int32_t> l(rows);
  for (auto& v : l) v = rng.below(static_cast<int>(classes));
  return l;
}

const size_t kRows[] = {1, 3, 17, 200};
const size_t kCols[] = {1, 7, 15, 16, 17, 33, 1000};

class SoftmaxRung : public testing::RungTest {};

TEST_P(SoftmaxRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&softmax_fns(), expected(softmax_fns_scalar(), softmax_fns_avx2(), softmax_fns_avx512()));
}

TEST_P(SoftmaxRung, ForwardGrid) {
  std::vector<std::pair<size_t, size_t>> shapes = {{0, 5}, {4, 0}, {2, 100003}, {3000, 10}};
  for (size_t r : kRows) {
    for (size_t c : kCols) shapes.emplace_back(r, c);
  }
  for (size_t n : kLengths) shapes.emplace_back(1, n);
  for (auto [rows, cols] : shapes) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    auto x = uniform(rows * cols, -20, 20, rows * 131 + cols);
    // Stability: a row shifted far up must not overflow, one far down must not underflow to 0/0.
    if (rows >= 3) {
      for (size_t j = 0; j < cols; ++j) x[j] += 1000.0f, x[cols + j] -= 1000.0f;
    }
    auto want = ref_softmax(x, rows, cols);
    std::vector<float> y(rows * cols);
    softmax(x.data(), y.data(), rows, cols);
    EXPECT_TRUE(all_close(y, want.p, kProbRtol, kFlush));
    softmax(x.data(), x.data(), rows, cols);  // in place
    EXPECT_TRUE(all_close(x, want.p, kProbRtol, kFlush));
  }
}

TEST_P(SoftmaxRung, MaskedEntriesAndNan) {
  std::vector<float> x = {1, -kInf, 2, -kInf, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  x[9] = std::nanf("");  // second row of 9 holds a NaN
  std::vector<float> y(x.size());
  softmax(x.data(), y.data(), 2, 9);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_NEAR(y[0], std::exp(1.0) / (std::exp(1.0) + std::exp(2.0) + 5), 1e-6);
  for (size_t j = 9; j < 18; ++j) EXPECT_TRUE(std::isnan(y[j])) << j;
}

TEST_P(SoftmaxRung, Backward) {
  for (auto [rows, cols] : std::vector<std::pair<size_t, size_t>>{
           {1, 1}, {3, 7}, {17, 17}, {5, 33}, {20, 1000}, {2, 100003}, {3000, 10}}) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    auto x = uniform(rows * cols, -5, 5, rows + cols);
    std::vector<float> y(rows * cols);
    softmax(x.data(), y.data(), rows, cols);
    auto dy = uniform(rows * cols, -1, 1, rows * cols);
    std::vector<double> want(rows * cols), mag(rows * cols);
    for (size_t i = 0; i < rows; ++i) {
      double dot = 0, dot_mag = 0;  // dot_mag bounds the rounding error of the f32 dot product
      for (size_t j = 0; j < cols; ++j) {
        dot += double(y[i * cols + j]) * dy[i * cols + j];
        dot_mag += std::fabs(double(y[i * cols + j]) * dy[i * cols + j]);
      }
      for (size_t j = 0; j < cols; ++j) {
        size_t k = i * cols + j;
        want[k] = y[k] * (dy[k] - dot);
        mag[k] = std::fabs(y[k]) * (std::fabs(dy[k]) + dot_mag);
      }
    }
    std::vector<float> dx(rows * cols);
    softmax_backward(y.data(), dy.data(), dx.data(), rows, cols);
    EXPECT_TRUE(all_close(dx, want, 2e-6, 0, mag));
    softmax_backward(y.data(), dy.data(), dy.data(), rows, cols);  // in place, dx == dy
    EXPECT_TRUE(all_close(dy, want, 2e-6, 0, mag));
  }
}

TEST_P(SoftmaxRung, CrossEntropyForwardAndBackward) {
  std::vector<std::pair<size_t, size_t>> shapes = {{4, 100003}, {3000, 10}, {1000, 2}};
  for (size_t r : kRows) {
    for (size_t c : kCols) shapes.emplace_back(r, c);
  }
  for (auto [rows, classes] : shapes) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << classes);
    auto logits = uniform(rows * classes, -10, 10, rows * 7 + classes);
    auto labels = random_labels(rows, classes, rows + classes);
    auto want = ref_softmax(logits, rows, classes);
    double want_loss = 0;
    for (size_t i = 0; i < rows; ++i) want_loss += want.lse[i] - logits[i * classes + labels[i]];
    want_loss /= double(rows);

    std::vector<float> probs(rows * classes);
    float loss = softmax_cross_entropy(logits.data(), labels.data(), probs.data(), rows, classes);
    EXPECT_TRUE(testing::scalar_close(loss, want_loss, 2e-6, 1e-7));
    EXPECT_TRUE(all_close(probs, want.p, kProbRtol, kFlush));

    auto in_place = logits;
    float loss2 = softmax_cross_entropy(in_place.data(), labels.data(), in_place.data(), rows, classes);
    EXPECT_EQ(loss2, loss);
    EXPECT_TRUE(testing::same_bits(in_place, probs));

    const float dloss = 2.5f;
    std::vector<double> dwant(rows * classes), mag(rows * classes);
    for (size_t i = 0; i < rows; ++i) {
      for (size_t j = 0; j < classes; ++j) {
        size_t k = i * classes + j;
        double onehot = j == size_t(labels[i]) ? 1.0 : 0.0;
        dwant[k] = (probs[k] - onehot) * dloss / double(rows);
        mag[k] = (probs[k] + onehot) * dloss / double(rows);
      }
    }
    std::vector<float> dlogits(rows * classes);
    softmax_cross_entropy_backward(probs.data(), labels.data(), dloss, dlogits.data(), rows, classes);
    EXPECT_TRUE(all_close(dlogits, dwant, 3e-7, 0, mag));
    softmax_cross_entropy_backward(probs.data(), labels.data(), dloss, probs.data(), rows, classes);
    EXPECT_TRUE(all_close(probs, dwant, 3e-7, 0, mag));  // in place
  }
}

TEST_P(SoftmaxRung, CrossEntropyStaysFiniteWhenTheLabelProbabilityUnderflows) {
  std::vector<float> logits = {0, 0, -120, 5};  // 1 row of 3, then 1 row of 1
  std::vector<int32_t> labels = {2};
  std::vector<float> probs(3);
  float loss = softmax_cross_entropy(logits.data(), labels.data(), probs.data(), 1, 3);
  EXPECT_NEAR(loss, 120.0 + std::log(2.0), 1e-4);
  // One class: p = 1, loss 0, gradient 0.
  labels = {0};
  EXPECT_EQ(softmax_cross_entropy(&logits[3], labels.data(), probs.data(), 1, 1), 0.0f);
  EXPECT_EQ(probs[0], 1.0f);
  float d = 7;
  softmax_cross_entropy_backward(probs.data(), labels.data(), 1.0f, &d, 1, 1);
  EXPECT_EQ(d, 0.0f);
}

TEST_P(SoftmaxRung, CrossEntropyGradientMatchesFiniteDifferences) {
  const size_t rows = 3, classes = 5;
  auto logits = uniform(rows * classes, -2, 2, 77);
  auto labels = random_labels(rows, classes, 78);
  auto loss_at = [&](const std::vector<float>& x, size_t k, double dx) {  // in double
    double total = 0;
    for (size_t i = 0; i < rows; ++i) {
      double m = -INFINITY, s = 0;
      auto v = [&](size_t j) { return double(x[i * classes + j]) + (i * classes + j == k ? dx : 0.0); };
      for (size_t j = 0; j < classes; ++j) m = std::max(m, v(j));
      for (size_t j = 0; j < classes; ++j) s += std::exp(v(j) - m);
      total += m + std::log(s) - v(labels[i]);
    }
    return total / rows;
  };
  std::vector<float> probs(rows * classes), grad(rows * classes);
  softmax_cross_entropy(logits.data(), labels.data(), probs.data(), rows, classes);
  softmax_cross_entropy_backward(probs.data(), labels.data(), 1.0f, grad.data(), rows, classes);
  for (size_t k = 0; k < rows * classes; ++k) {
    const double h = 1e-5;
    double fd = (loss_at(logits, k, h) - loss_at(logits, k, -h)) / (2 * h);
    EXPECT_NEAR(grad[k], fd, 1e-6) << k;
  }
}

TEST_P(SoftmaxRung, BadLabelsThrowBeforeComputing) {
  const size_t rows = 5, classes = 10;
  auto logits = uniform(rows * classes, -1, 1, 3);
  for (int32_t bad : {-1, 10, 2147483647}) {
    std::vector<int32_t> labels = {0, 9, 4, bad, 1};
    std::vector<float> probs(rows * classes, -7.0f);
    try {
      softmax_cross_entropy(logits.data(), labels.data(), probs.data(), rows, classes);
      ADD_FAILURE() << "no throw for label " << bad;
    } catch (const ValueError& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find("label " + std::to_string(bad)), std::string::npos) << msg;
      EXPECT_NE(msg.find("row 3"), std::string::npos) << msg;
    }
    for (float p : probs) ASSERT_EQ(p, -7.0f);  // nothing written
    EXPECT_THROW(softmax_cross_entropy_backward(probs.data(), labels.data(), 1.0f, probs.data(), rows, classes),
                 ValueError);
    for (float p : probs) ASSERT_EQ(p, -7.0f);
  }
  std::vector<int32_t> labels = {0};
  EXPECT_THROW(softmax_cross_entropy(logits.data(), labels.data(), logits.data(), 1, 0), ValueError);
}

TEST_P(SoftmaxRung, EmptyBatch) {
  EXPECT_TRUE(std::isnan(softmax_cross_entropy(nullptr, nullptr, nullptr, 0, 10)));
  softmax_cross_entropy_backward(nullptr, nullptr, 1.0f, nullptr, 0, 10);
}

TESSERA_INSTANTIATE_RUNGS(SoftmaxRung);

}  // namespace
}  // namespace tessera::kernels
