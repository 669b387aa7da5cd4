// Layer norm forward and backward at every ISA rung against double references; the backward also
// against finite differences of the double forward; optional arguments, in place, bad input.
#include <tessera/core/error.h>
#include <tessera/kernels/layernorm.h>

#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace tessera::kernels {
namespace {

using testing::all_close;
using testing::uniform;

constexpr float kEps = 1e-5f;

struct RefForward {
  std::vector<double> y, mean, rstd, xhat;
};
RefForward ref_forward(const std::vector<float>& x, const std::vector<float>& gamma,
                       const std::vector<float>& beta, size_t rows, size_t cols, double eps) {
  RefForward r{std::vector<double>(rows * cols), std::vector<double>(rows), std::vector<double>(rows),
               std::vector<double>(rows * cols)};
  for (size_t i = 0; i < rows; ++i) {
    double m = 0, v = 0;
    for (size_t j = 0; j < cols; ++j) m += x[i * cols + j];
    m /= cols;
    for (size_t j = 0; j < cols; ++j) v += (x[i * cols + j] - m) * (x[i * cols + j] - m);
    r.mean[i] = m;
    r.rstd[i] = 1.0 / std::sqrt(v / cols + eps);
    for (size_t j = 0; j < cols; ++j) {
      size_t k = i * cols + j;
      r.xhat[k] = (x[k] - m) * r.rstd[i];
      r.y[k] = r.xhat[k] * gamma[j] + beta[j];
    }
  }
  return r;
}

std::vector<std::pair<size_t, size_t>> shapes() {
  std::vector<std::pair<size_t, size_t>> s = {{2, 100003}, {5000, 7}, {70000, 3}, {0, 5}};
  for (size_t r : {1, 3, 17, 300}) {
    for (size_t c : {1, 7, 15, 16, 17, 33, 1000}) s.emplace_back(r, c);
  }
  return s;
}

class LayerNormRung : public testing::RungTest {};

TEST_P(LayerNormRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&layernorm_fns(), expected(layernorm_fns_scalar(), layernorm_fns_avx2(), layernorm_fns_avx512()));
}

TEST_P(LayerNormRung, ForwardAndBackwardGrid) {
  for (auto [rows, cols] : shapes()) {
    SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
    const size_t n = rows * cols;
    auto x = uniform(n, -3, 5, rows + 3 * cols);
    auto gamma = uniform(cols, 0.5, 1.5, cols), beta = uniform(cols, -1, 1, cols + 1);
    auto dy = uniform(n, -1, 1, n + 5);
    auto ref = ref_forward(x, gamma, beta, rows, cols, kEps);

    std::vector<float> y(n), mean(rows), rstd(rows);
    layer_norm(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, cols, kEps);
    // f32 rounds x - mean at the scale of |x| + |mean|, and rstd amplifies that: xm bounds the
    // magnitude of xhat together with its unavoidable rounding (large for rows of nearly equal
    // values, as in the 70000x3 case).
    std::vector<double> xm(n), ymag(n);
    for (size_t k = 0; k < n; ++k) {
      size_t i = k / cols;
      xm[k] = std::fabs(ref.xhat[k]) + (std::fabs(x[k]) + std::fabs(ref.mean[i])) * ref.rstd[i];
      ymag[k] = xm[k] * std::fabs(gamma[k % cols]) + std::fabs(beta[k % cols]);
    }
    EXPECT_TRUE(all_close(y, ref.y, 4e-6, 0, ymag));
    EXPECT_TRUE(all_close(mean, ref.mean, 1e-6, 1e-6));
    // rstd of a constant row (cols == 1) is 1/sqrt(eps) exactly; otherwise a few ulp.
    EXPECT_TRUE(all_close(rstd, ref.rstd, 4e-6, 0));

    // Backward, in double, from the double forward.
    std::vector<double> dx_want(n), dx_mag(n), dg_want(cols, 0), db_want(cols, 0), dg_mag(cols, 0), db_mag(cols, 0);
    for (size_t i = 0; i < rows; ++i) {
      double a = 0, b = 0, amag = 0, bmag = 0;
      for (size_t j = 0; j < cols; ++j) {
        size_t k = i * cols + j;
        double g = double(dy[k]) * gamma[j];
        a += g, b += g * ref.xhat[k], amag += std::fabs(g), bmag += std::fabs(g) * xm[k];
        dg_want[j] += dy[k] * ref.xhat[k], dg_mag[j] += std::fabs(dy[k]) * xm[k];
        db_want[j] += dy[k], db_mag[j] += std::fabs(dy[k]);
      }
      a /= cols, b /= cols, amag /= cols, bmag /= cols;
      for (size_t j = 0; j < cols; ++j) {
        size_t k = i * cols + j;
        double g = double(dy[k]) * gamma[j];
        dx_want[k] = ref.rstd[i] * (g - a - ref.xhat[k] * b);
        dx_mag[k] = ref.rstd[i] * (std::fabs(g) + amag + xm[k] * bmag);
      }
    }
    std::vector<float> dx(n), dgamma(cols, 9.0f), dbeta(cols, 9.0f);
    layer_norm_backward(x.data(), dy.data(), gamma.data(), mean.data(), rstd.data(), dx.data(),
                        dgamma.data(), dbeta.data(), rows, cols);
    EXPECT_TRUE(all_close(dx, dx_want, 1e-5, 0, dx_mag));
    EXPECT_TRUE(all_close(dgamma, dg_want, 1e-5, 0, dg_mag));
    EXPECT_TRUE(all_close(dbeta, db_want, 1e-5, 0, db_mag));

    // In place: y == x, dx == dy; same results bit for bit.
    auto xi = x, dyi = dy;
    layer_norm(xi.data(), gamma.data(), beta.data(), xi.data(), mean.data(), rstd.data(), rows, cols, kEps);
    EXPECT_EQ(xi, y);
    layer_norm_backward(x.data(), dyi.data(), gamma.data(), mean.data(), rstd.data(), dyi.data(),
                        nullptr, nullptr, rows, cols);
    EXPECT_EQ(dyi, dx);
  }
}

TEST_P(LayerNormRung, TwoPassVarianceSurvivesALargeMean) {
  // E[x^2] - E[x]^2 in f32 would lose every digit here.
  const size_t rows = 4, cols = 1000;
  auto x = uniform(rows * cols, -1, 1, 8);
  for (auto& v : x) v += 1e4f;
  std::vector<float> ones(cols, 1.0f), zeros(cols, 0.0f);
  auto ref = ref_forward(x, ones, zeros, rows, cols, kEps);
  std::vector<float> y(rows * cols), mean(rows), rstd(rows);
  layer_norm(x.data(), nullptr, nullptr, y.data(), mean.data(), rstd.data(), rows, cols, kEps);
  EXPECT_TRUE(all_close(rstd, ref.rstd, 1e-5, 0));
  EXPECT_TRUE(all_close(y, ref.y, 0, 2e-3));  // x - mean itself carries ~1e-3 f32 error
}

TEST_P(LayerNormRung, BackwardMatchesFiniteDifferences) {
  // L = sum(w * layer_norm(x)); dL/dx, dL/dgamma, dL/dbeta by central differences in double.
  const size_t rows = 3, cols = 7;
  auto x = uniform(rows * cols, -2, 2, 21), w = uniform(rows * cols, -1, 1, 22);
  auto gamma = uniform(cols, 0.5, 1.5, 23), beta = uniform(cols, -1, 1, 24);
  auto loss = [&](const std::vector<float>& xs, const std::vector<float>& gs, const std::vector<float>& bs,
                  int which, size_t k, double h) {
    // Perturbs element k of x (which = 0), gamma (1) or beta (2) by h, in double.
    double total = 0;
    for (size_t i = 0; i < rows; ++i) {
      auto xv = [&](size_t j) { return double(xs[i * cols + j]) + (which == 0 && k == i * cols + j ? h : 0.0); };
      double m = 0, v = 0;
      for (size_t j = 0; j < cols; ++j) m += xv(j);
      m /= cols;
      for (size_t j = 0; j < cols; ++j) v += (xv(j) - m) * (xv(j) - m);
      double rs = 1.0 / std::sqrt(v / cols + kEps);
      for (size_t j = 0; j < cols; ++j) {
        double g = gs[j] + (which == 1 && k == j ? h : 0.0), b = bs[j] + (which == 2 && k == j ? h : 0.0);
        total += w[i * cols + j] * ((xv(j) - m) * rs * g + b);
      }
    }
    return total;
  };
  std::vector<float> y(rows * cols), mean(rows), rstd(rows), dx(rows * cols), dgamma(cols), dbeta(cols);
  layer_norm(x.data(), gamma.data(), beta.data(), y.data(), mean.data(), rstd.data(), rows, cols, kEps);
  layer_norm_backward(x.data(), w.data(), gamma.data(), mean.data(), rstd.data(), dx.data(), dgamma.data(),
                      dbeta.data(), rows, cols);
  const double h = 1e-5;
  auto fd = [&](int which, size_t k) {
    return (loss(x, gamma, beta, which, k, h) - loss(x, gamma, beta, which, k, -h)) / (2 * h);
  };
  for (size_t k = 0; k < rows * cols; ++k) EXPECT_NEAR(dx[k], fd(0, k), 2e-5) << "dx " << k;
  for (size_t j = 0; j < cols; ++j) {
    EXPECT_NEAR(dgamma[j], fd(1, j), 2e-5) << "dgamma " << j;
    EXPECT_NEAR(dbeta[j], fd(2, j), 2e-5) << "dbeta " << j;
  }
}

TEST_P(LayerNormRung, OptionalArgumentsAndEmptyBatch) {
  const size_t rows = 5, cols = 33;
  auto x = uniform(rows * cols, -1, 1, 31);
  std::vector<float> ones(cols, 1.0f), zeros(cols, 0.0f);
  std::vector<float> y1(rows * cols), y2(rows * cols), mean(rows), rstd(rows);
  layer_norm(x.data(), ones.data(), zeros.data(), y1.data(), mean.data(), rstd.data(), rows, cols, kEps);
  layer_norm(x.data(), nullptr, nullptr, y2.data(), nullptr, nullptr, rows, cols, kEps);
  EXPECT_EQ(y1, y2);
  std::vector<float> dg(cols, 5.0f), db(cols, 5.0f);
  layer_norm_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, dg.data(), db.data(), 0, cols);
  EXPECT_EQ(dg, zeros);  // a sum over no rows
  EXPECT_EQ(db, zeros);
}

TEST_P(LayerNormRung, BadArguments) {
  std::vector<float> x(4), y(4), m(2), r(2);
  EXPECT_THROW(layer_norm(x.data(), nullptr, nullptr, y.data(), m.data(), r.data(), 2, 2, -1e-5f), ValueError);
  EXPECT_THROW(layer_norm(x.data(), nullptr, nullptr, y.data(), m.data(), r.data(), 2, 2,
                          std::numeric_limits<float>::quiet_NaN()),
               ValueError);
  EXPECT_THROW(layer_norm(x.data(), nullptr, nullptr, y.data(), m.data(), r.data(), 2, 0, kEps), ValueError);
  EXPECT_THROW(layer_norm_backward(x.data(), x.data(), nullptr, m.data(), r.data(), y.data(), nullptr, nullptr, 2, 0),
               ValueError);
}

TESSERA_INSTANTIATE_RUNGS(LayerNormRung);

}  // namespace
}  // namespace tessera::kernels
