// SGD and AdamW at every ISA rung: a few steps against values worked out by hand from the
// torch.optim formulas, many steps over every test length against a double-precision loop, and
// hyper-parameter validation.
#include <tessera/core/error.h>
#include <tessera/kernels/optimizer.h>

#include "kernel_test_util.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace tessera::kernels {
namespace {

using testing::all_close;
using testing::kLengths;
using testing::uniform;

class OptimizerRung : public testing::RungTest {};

TEST_P(OptimizerRung, DispatchHonoursTheCap) {
  EXPECT_EQ(&optimizer_fns(), expected(optimizer_fns_scalar(), optimizer_fns_avx2(), optimizer_fns_avx512()));
}

// Runs `steps` SGD updates with constant gradient 0.5 on 17 copies of w = 1 (so both the vector
// body and the tail see them) and returns w after each step.
std::vector<float> sgd_trajectory(const SgdOptions& opt, int steps) {
  const size_t n = 17;
  std::vector<float> w(n, 1.0f), g(n, 0.5f), buf(n, 12345.0f), out;
  for (int t = 1; t <= steps; ++t) {
    sgd_step(w.data(), g.data(), buf.data(), n, opt, t);
    for (float v : w) EXPECT_EQ(v, w[0]) << "lanes disagree at step " << t;
    out.push_back(w[0]);
  }
  return out;
}

TEST_P(OptimizerRung, SgdByHand) {
  // lr 0.1, g = 0.5, w0 = 1.
  SgdOptions plain;
  plain.lr = 0.1;
  // w -= 0.1 * 0.5 each step.
  auto w = sgd_trajectory(plain, 3);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], 0.90f);
  EXPECT_FLOAT_EQ(w[2], 0.85f);

  SgdOptions mom = plain;
  mom.momentum = 0.9;
  mom.weight_decay = 0.01;
  // t1: d = 0.5 + 0.01*1 = 0.51; buf = d = 0.51 (the first buffer is a copy); w = 1 - 0.051 = 0.949
  // t2: d = 0.5 + 0.00949 = 0.50949; buf = 0.9*0.51 + 0.50949 = 0.96849; w = 0.949 - 0.096849 = 0.852151
  // t3: d = 0.50852151; buf = 0.9*0.96849 + 0.50852151 = 1.38016251; w = 0.852151 - 0.138016251
  w = sgd_trajectory(mom, 3);
  EXPECT_FLOAT_EQ(w[0], 0.949f);
  EXPECT_FLOAT_EQ(w[1], 0.852151f);
  EXPECT_FLOAT_EQ(w[2], 0.714134749f);

  SgdOptions nesterov = plain;
  nesterov.momentum = 0.9;
  nesterov.nesterov = true;
  // t1: buf = 0.5; step d + 0.9 buf = 0.95; w = 0.905
  // t2: buf = 0.45 + 0.5 = 0.95; step 0.5 + 0.855 = 1.355; w = 0.7695
  // t3: buf = 0.855 + 0.5 = 1.355; step 0.5 + 1.2195 = 1.7195; w = 0.59755
  w = sgd_trajectory(nesterov, 3);
  EXPECT_FLOAT_EQ(w[0], 0.905f);
  EXPECT_FLOAT_EQ(w[1], 0.7695f);
  EXPECT_FLOAT_EQ(w[2], 0.59755f);

  SgdOptions damp = plain;
  damp.momentum = 0.9;
  damp.dampening = 0.5;
  // t1: buf = 0.5 (no dampening on the copy); w = 0.95
  // t2: buf = 0.45 + 0.5*0.5 = 0.7; w = 0.88
  // t3: buf = 0.63 + 0.25 = 0.88; w = 0.792
  w = sgd_trajectory(damp, 3);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], 0.88f);
  EXPECT_FLOAT_EQ(w[2], 0.792f);
}

TEST_P(OptimizerRung, AdamWByHand) {
  // lr 0.01, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1, w0 = 1, gradients 0.5, -0.25, 1.
  // t1: w = 1*(1 - 0.001) = 0.999; m = 0 + 0.1*(0.5 - 0) = 0.05; v = 0.001*0.25 = 0.00025;
  //     step = 0.01/(1 - 0.9) = 0.1; denom = sqrt(0.00025)/sqrt(0.001) + 1e-8 = 0.5 + 1e-8;
  //     w = 0.999 - 0.1*0.05/(0.5 + 1e-8) = 0.9890000002
  // t2: w = 0.9890000002*0.999 = 0.9880110002; m = 0.05 + 0.1*(-0.25 - 0.05) = 0.02;
  //     v = 0.999*0.00025 + 0.001*0.0625 = 0.00031225; step = 0.01/0.19 = 0.0526315789;
  //     denom = sqrt(0.00031225)/sqrt(0.001999) = 0.3952254; w = 0.9880110002 - 0.0026633703
  //     = 0.9853476299
  // t3: w = 0.9843622822; m = 0.02 + 0.1*(1 - 0.02) = 0.118; v = 0.999*0.00031225 + 0.001
  //     = 0.00131193775; step = 0.01/0.271 = 0.0369003690; denom = 0.0362207/0.0547449
  //     = 0.661627; w = 0.9843622822 - 0.0065811159 = 0.9777811663
  AdamWOptions opt;
  opt.lr = 0.01;
  opt.weight_decay = 0.1;
  const size_t n = 21;
  std::vector<float> w(n, 1.0f), m(n, 0.0f), v(n, 0.0f);
  const float grads[] = {0.5f, -0.25f, 1.0f};
  const double want_w[] = {0.9890000002, 0.9853476298705847, 0.9777811663376385};
  const double want_m[] = {0.05, 0.02, 0.118};
  const double want_v[] = {0.00025, 0.00031225, 0.00131193775};
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g(n, grads[t - 1]);
    adamw_step(w.data(), g.data(), m.data(), v.data(), n, opt, t);
    for (size_t i = 0; i < n; ++i) {
      EXPECT_NEAR(w[i], want_w[t - 1], 1e-6) << "t " << t << " i " << i;
      EXPECT_NEAR(m[i], want_m[t - 1], 1e-7 * std::fabs(want_m[t - 1])) << "t " << t;
      EXPECT_NEAR(v[i], want_v[t - 1], 1e-6 * want_v[t - 1]) << "t " << t;
    }
  }
}

TEST_P(OptimizerRung, SgdMatchesDoubleLoop) {
  struct Case {
    double momentum, dampening, weight_decay;
    bool nesterov;
  };
  for (Case c : {Case{0, 0, 0, false}, Case{0, 0, 1e-2, false}, Case{0.9, 0, 1e-3, false},
                 Case{0.9, 0, 1e-3, true}, Case{0.5, 0.3, 0, false}}) {
    SgdOptions opt;
    opt.lr = 0.05, opt.momentum = c.momentum, opt.dampening = c.dampening;
    opt.weight_decay = c.weight_decay, opt.nesterov = c.nesterov;
    for (size_t n : kLengths) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " momentum " << c.momentum << " nesterov " << c.nesterov);
      auto w = uniform(n, -1, 1, n);
      std::vector<float> buf(n);
      std::vector<double> wd(w.begin(), w.end()), bd(n);
      for (int t = 1; t <= 5; ++t) {
        auto g = uniform(n, -1, 1, n * 10 + t);
        sgd_step(w.data(), g.data(), buf.data(), n, opt, t);
        for (size_t i = 0; i < n; ++i) {
          double d = g[i] + c.weight_decay * wd[i];
          if (c.momentum != 0) {
            bd[i] = t == 1 ? d : c.momentum * bd[i] + (1 - c.dampening) * d;
            d = c.nesterov ? d + c.momentum * bd[i] : bd[i];
          }
          wd[i] -= opt.lr * d;
        }
      }
      EXPECT_TRUE(all_close(w, wd, 1e-6, 1e-7));
      // The buffer is a sum of O(1) terms of both signs: its rounding is absolute, ~1e-7.
      if (c.momentum != 0) {
        EXPECT_TRUE(all_close(buf, bd, 1e-6, 1e-6));
      }
    }
  }
}

TEST_P(OptimizerRung, AdamWMatchesDoubleLoop) {
  AdamWOptions opt;
  opt.lr = 1e-3, opt.beta1 = 0.9, opt.beta2 = 0.98, opt.eps = 1e-6, opt.weight_decay = 0.05;
  for (size_t n : kLengths) {
    SCOPED_TRACE(n);
    auto w = uniform(n, -1, 1, n + 1);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> wd(w.begin(), w.end()), md(n, 0.0), vd(n, 0.0);
    for (int t = 1; t <= 6; ++t) {
      auto g = uniform(n, -2, 2, n * 31 + t);
      adamw_step(w.data(), g.data(), m.data(), v.data(), n, opt, t);
      const double bc1 = 1 - std::pow(opt.beta1, t), bc2 = 1 - std::pow(opt.beta2, t);
      for (size_t i = 0; i < n; ++i) {
        wd[i] *= 1 - opt.lr * opt.weight_decay;
        md[i] += (1 - opt.beta1) * (g[i] - md[i]);
        vd[i] = opt.beta2 * vd[i] + (1 - opt.beta2) * double(g[i]) * g[i];
        wd[i] -= opt.lr / bc1 * md[i] / (std::sqrt(vd[i]) / std::sqrt(bc2) + opt.eps);
      }
    }
    // Each step moves w by at most ~lr; its f32 rounding is relative to |w| ~ 1.
    EXPECT_TRUE(all_close(w, wd, 1e-6, 1e-7));
    EXPECT_TRUE(all_close(m, md, 1e-5, 1e-7));
    EXPECT_TRUE(all_close(v, vd, 1e-5, 1e-9));
  }
}

TEST_P(OptimizerRung, VectorRungsTrackTheScalarRung) {
  // The same 20 AdamW + 20 SGD-momentum steps through the dispatched rung and the scalar table.
  const size_t n = 1003;
  auto w0 = uniform(n, -1, 1, 3);
  std::vector<float> w = w0, m(n), v(n), wr = w0, mr(n), vr(n), b(n), br(n);
  AdamWOptions a;
  SgdOptions s;
  s.lr = 0.01, s.momentum = 0.9, s.weight_decay = 1e-4, s.nesterov = true;
  for (int t = 1; t <= 20; ++t) {
    auto g = uniform(n, -1, 1, 100 + t);
    adamw_step(w.data(), g.data(), m.data(), v.data(), n, a, t);
    sgd_step(w.data(), g.data(), b.data(), n, s, t);
    {
      ScopedIsaCap scalar(Isa::scalar);
      adamw_step(wr.data(), g.data(), mr.data(), vr.data(), n, a, t);
      sgd_step(wr.data(), g.data(), br.data(), n, s, t);
    }
  }
  std::vector<double> want(wr.begin(), wr.end());
  EXPECT_TRUE(all_close(w, want, 2e-6, 1e-7));
}

// Denormal state flushes to zero (optimizer.h): a momentum buffer decaying through the denormal
// range, a denormal gradient, and AdamW's moments; normal values are untouched, and the caller's
// floating-point mode is restored.
TEST_P(OptimizerRung, DenormalsFlushToZero) {
  const float tiny = 1e-39f;  // denormal
  ASSERT_EQ(std::fpclassify(tiny), FP_SUBNORMAL);
  const size_t n = 40;  // past a vector width, with a tail
  std::vector<float> w(n, 0.5f), g(n, 0.f), buf(n, tiny);
  g[1] = tiny;   // a denormal gradient reads as zero
  buf[2] = 1.f;  // a normal buffer decays normally
  SgdOptions o;
  o.lr = 0.1;
  o.momentum = 0.9;
  sgd_step(w.data(), g.data(), buf.data(), n, o, 2);
  for (size_t i = 0; i < n; ++i) {
    if (i == 2) {
      EXPECT_EQ(buf[i], 0.9f);
      EXPECT_EQ(w[i], 0.5f - 0.1f * 0.9f);
    } else {
      EXPECT_EQ(buf[i], 0.f) << i;
      EXPECT_EQ(w[i], 0.5f) << i;
    }
  }
  std::vector<float> m(n, tiny), v(n, tiny), wa(n, 0.25f);
  AdamWOptions a;
  a.weight_decay = 0;
  adamw_step(wa.data(), g.data(), m.data(), v.data(), n, a, 3);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(m[i], 0.f) << i;
    EXPECT_EQ(v[i], 0.f) << i;
    EXPECT_EQ(wa[i], 0.25f) << i;
  }
  // The caller's mode is back: denormal arithmetic works outside the update.
  volatile float x = tiny;
  EXPECT_EQ(std::fpclassify(x * 0.5f), FP_SUBNORMAL);
}

TEST_P(OptimizerRung, BadHyperParameters) {
  std::vector<float> w(4), g(4), b(4), m(4), v(4);
  auto sgd = [&](SgdOptions o, int64_t t = 1, float* buf = nullptr) {
    sgd_step(w.data(), g.data(), buf ? buf : b.data(), 4, o, t);
  };
  SgdOptions o;
  o.lr = -0.1;
  EXPECT_THROW(sgd(o), ValueError);
  o = SgdOptions{};
  o.lr = NAN;
  EXPECT_THROW(sgd(o), ValueError);
  o = SgdOptions{};
  o.momentum = -0.5;
  EXPECT_THROW(sgd(o), ValueError);
  o = SgdOptions{};
  o.weight_decay = -1;
  EXPECT_THROW(sgd(o), ValueError);
  o = SgdOptions{};
  o.nesterov = true;  // momentum 0
  EXPECT_THROW(sgd(o), ValueError);
  o.momentum = 0.9, o.dampening = 0.1;
  EXPECT_THROW(sgd(o), ValueError);
  o = SgdOptions{};
  EXPECT_THROW(sgd(o, 0), ValueError);
  o.momentum = 0.9;
  EXPECT_THROW(sgd_step(w.data(), g.data(), nullptr, 4, o, 1), ValueError);
  o.momentum = 0;
  sgd_step(w.data(), g.data(), nullptr, 4, o, 1);  // no buffer needed without momentum

  auto adamw = [&](AdamWOptions a, int64_t t = 1) { adamw_step(w.data(), g.data(), m.data(), v.data(), 4, a, t); };
  AdamWOptions a;
  a.lr = -1;
  EXPECT_THROW(adamw(a), ValueError);
  a = AdamWOptions{};
  a.beta1 = 1.0;
  EXPECT_THROW(adamw(a), ValueError);
  a = AdamWOptions{};
  a.beta2 = -0.1;
  EXPECT_THROW(adamw(a), ValueError);
  a = AdamWOptions{};
  a.eps = -1e-8;
  EXPECT_THROW(adamw(a), ValueError);
  a = AdamWOptions{};
  a.weight_decay = -0.01;
  EXPECT_THROW(adamw(a), ValueError);
  EXPECT_THROW(adamw(AdamWOptions{}, 0), ValueError);
  try {
    a = AdamWOptions{};
    a.beta1 = 1.5;
    adamw(a);
    ADD_FAILURE() << "no throw for beta1 1.5";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("beta1 1.5"), std::string::npos) << e.what();
  }
}

TESSERA_INSTANTIATE_RUNGS(OptimizerRung);

}  // namespace
}  // namespace tessera::kernels
