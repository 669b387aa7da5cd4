#include <tessera/core/optim.h>

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace tessera {
namespace {

// One parameter w0 = [1, -2, 4] and three gradients; lr, momentum and weight decay are powers
// of two so every expected value below is exact in f32.
const std::vector<float> kW0 = {1, -2, 4};
const std::vector<std::vector<float>> kGrads = {{1, 2, -1}, {0.5f, -1, 2}, {2, 0, -0.5f}};

// Runs three steps and returns the parameter after each.
std::vector<std::vector<float>> run3(Optimizer& opt, double lr) {
  Tensor w = Tensor::from_vector(kW0, {3});
  std::vector<std::vector<float>> out;
  for (const auto& g : kGrads) {
    opt.step({w}, {Tensor::from_vector(g, {3})}, lr);
    out.push_back(w.to_f32_vector());
  }
  return out;
}

void expect_steps(const std::vector<std::vector<float>>& got, const std::vector<std::vector<float>>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t s = 0; s < got.size(); ++s) {
    ASSERT_EQ(got[s].size(), want[s].size());
    for (size_t i = 0; i < got[s].size(); ++i) {
      EXPECT_FLOAT_EQ(got[s][i], want[s][i]) << "step " << s + 1 << " element " << i;
    }
  }
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no exception)";
}

TEST(Sgd, PlainStepsMatchHandComputedValues) {
  auto opt = make_optimizer("sgd", {.lr = 0.5});
  EXPECT_STREQ(opt->name(), "sgd");
  // w <- w - 0.5 g
  //   step 1: [1, -2, 4] - 0.5 [1, 2, -1]       = [0.5, -3, 4.5]
  //   step 2: [0.5, -3, 4.5] - 0.5 [0.5, -1, 2] = [0.25, -2.5, 3.5]
  //   step 3: - 0.5 [2, 0, -0.5]                = [-0.75, -2.5, 3.75]
  expect_steps(run3(*opt, 0.5), {{0.5f, -3, 4.5f}, {0.25f, -2.5f, 3.5f}, {-0.75f, -2.5f, 3.75f}});
  EXPECT_EQ(opt->steps(), 3);
  EXPECT_TRUE(opt->state().empty()) << "plain SGD keeps no state";
}

TEST(Sgd, MomentumFirstStepBufferIsTheGradient) {
  auto opt = make_optimizer("sgd", {.lr = 0.5, .momentum = 0.5});
  // b1 = g1 = [1, 2, -1]                               w1 = [0.5, -3, 4.5]
  // b2 = 0.5 b1 + g2 = [1, 0, 1.5]                     w2 = [0, -3, 3.75]
  // b3 = 0.5 b2 + g3 = [2.5, 0, 0.25]                  w3 = [-1.25, -3, 3.625]
  expect_steps(run3(*opt, 0.5), {{0.5f, -3, 4.5f}, {0, -3, 3.75f}, {-1.25f, -3, 3.625f}});
  ASSERT_TRUE(opt->state().count("0.momentum"));
  EXPECT_EQ(opt->state().at("0.momentum").to_f32_vector(), (std::vector<float>{2.5f, 0, 0.25f}));
}

TEST(Sgd, Nesterov) {
  auto opt = make_optimizer("sgd", {.lr = 0.5, .momentum = 0.5, .nesterov = true});
  // update d = g + 0.5 b (b already updated)
  // b1 = [1, 2, -1],     d1 = [1.5, 3, -1.5],      w1 = [0.25, -3.5, 4.75]
  // b2 = [1, 0, 1.5],    d2 = [1, -1, 2.75],       w2 = [-0.25, -3, 3.375]
  // b3 = [2.5, 0, 0.25], d3 = [3.25, 0, -0.375],   w3 = [-1.875, -3, 3.5625]
  expect_steps(run3(*opt, 0.5), {{0.25f, -3.5f, 4.75f}, {-0.25f, -3, 3.375f}, {-1.875f, -3, 3.5625f}});
}

TEST(Sgd, WeightDecayIsAddedToTheGradient) {
  {
    auto opt = make_optimizer("sgd", {.lr = 0.5, .weight_decay = 0.25});
    // g' = g + 0.25 w
    // g1' = [1.25, 1.5, 0]                w1 = [0.375, -2.75, 4]
    // g2' = [0.59375, -1.6875, 3]         w2 = [0.078125, -1.90625, 2.5]
    // g3' = [2.01953125, -0.4765625, 0.125] w3 = [-0.931640625, -1.66796875, 2.4375]
    expect_steps(run3(*opt, 0.5),
                 {{0.375f, -2.75f, 4}, {0.078125f, -1.90625f, 2.5f}, {-0.931640625f, -1.66796875f, 2.4375f}});
  }
  {
    auto opt = make_optimizer("sgd", {.lr = 0.5, .momentum = 0.5, .weight_decay = 0.25});
    // b1 = g1' = [1.25, 1.5, 0]                              w1 = [0.375, -2.75, 4]
    // g2' = [0.59375, -1.6875, 3], b2 = [1.21875, -0.9375, 3] w2 = [-0.234375, -2.28125, 2.5]
    // g3' = [1.94140625, -0.5703125, 0.125], b3 = [2.55078125, -1.0390625, 1.625]
    //                                                        w3 = [-1.509765625, -1.76171875, 1.6875]
    expect_steps(run3(*opt, 0.5),
                 {{0.375f, -2.75f, 4}, {-0.234375f, -2.28125f, 2.5f}, {-1.509765625f, -1.76171875f, 1.6875f}});
  }
}

TEST(Sgd, LrArgumentOverridesOptionsAndShapesAreChecked) {
  auto opt = make_optimizer("sgd", {.lr = 123.0});
  Tensor w = Tensor::from_vector({1, 1}, {2});
  opt->step({w}, {Tensor::from_vector({2, -4}, {2})}, 0.25);
  EXPECT_EQ(w.to_f32_vector(), (std::vector<float>{0.5f, 2}));

  Tensor a = Tensor::zeros({2}), b = Tensor::zeros({3});
  std::string msg = message_of([&] { opt->step({a, b}, {Tensor::zeros({2}), Tensor::zeros({4})}, 0.1); });
  EXPECT_NE(msg.find("parameter 1"), std::string::npos) << msg;
  EXPECT_THROW(opt->step({a}, {}, 0.1), ValueError);
  EXPECT_THROW(opt->step({Tensor::zeros({2}, DType::i32)}, {Tensor::zeros({2}, DType::i32)}, 0.1), ValueError);
}

// torch.optim.AdamW, in double:
//   w <- w (1 - lr wd)
//   m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
//   w <- w - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
struct AdamWReference {
  double lr, b1, b2, eps, wd;
  std::vector<double> w, m, v;
  int t = 0;
  void step(const std::vector<float>& g) {
    ++t;
    double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
      w[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(AdamW, MatchesTorchAlgorithmInDouble) {
  struct Case {
    double lr, b1, b2, eps, wd;
  };
  for (Case c : {Case{0.1, 0.9, 0.999, 1e-8, 0.0}, Case{0.1, 0.9, 0.999, 1e-8, 0.5},
                 Case{0.01, 0.8, 0.99, 1e-3, 0.1}}) {
    SCOPED_TRACE(testing::Message() << "lr=" << c.lr << " b1=" << c.b1 << " b2=" << c.b2 << " eps=" << c.eps
                                    << " wd=" << c.wd);
    OptimizerOptions o;
    o.lr = c.lr;
    o.beta1 = c.b1;
    o.beta2 = c.b2;
    o.eps = c.eps;
    o.weight_decay = c.wd;
    auto opt = make_optimizer("adamw", o);
    EXPECT_STREQ(opt->name(), "adamw");
    AdamWReference ref{c.lr, c.b1, c.b2, c.eps, c.wd, {kW0.begin(), kW0.end()}, {0, 0, 0}, {0, 0, 0}};
    Tensor w = Tensor::from_vector(kW0, {3});
    for (const auto& g : kGrads) {
      opt->step({w}, {Tensor::from_vector(g, {3})}, c.lr);
      ref.step(g);
      std::vector<float> got = w.to_f32_vector();
      for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got[i], ref.w[i], 1e-6 * (1 + std::fabs(ref.w[i]))) << "t=" << ref.t;
      std::vector<float> m = opt->state().at("0.m").to_f32_vector(), v = opt->state().at("0.v").to_f32_vector();
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_NEAR(m[i], ref.m[i], 1e-6 * (1 + std::fabs(ref.m[i])));
        EXPECT_NEAR(v[i], ref.v[i], 1e-6 * (1 + std::fabs(ref.v[i])));
      }
    }
  }
}

TEST(AdamW, FirstStepMovesEachWeightByAboutLr) {
  // With bias correction, step 1 is lr * g / (|g| + eps') = lr * sign(g): a hand check that does
  // not depend on the reference above.
  auto opt = make_optimizer("adamw", {.lr = 0.1});
  Tensor w = Tensor::from_vector(kW0, {3});
  opt->step({w}, {Tensor::from_vector(kGrads[0], {3})}, 0.1);
  std::vector<float> got = w.to_f32_vector();
  EXPECT_NEAR(got[0], 0.9, 1e-6);
  EXPECT_NEAR(got[1], -2.1, 1e-6);
  EXPECT_NEAR(got[2], 4.1, 1e-6);
}

TEST(AdamW, DecoupledWeightDecayActsWithZeroGradient) {
  // g = 0: m = v = 0, so only the decay moves w: w (1 - lr wd)^t.
  auto opt = make_optimizer("adamw", {.lr = 0.5, .weight_decay = 0.5});
  Tensor w = Tensor::from_vector({4, -8}, {2});
  for (int t = 0; t < 3; ++t) opt->step({w}, {Tensor::zeros({2})}, 0.5);
  EXPECT_FLOAT_EQ(w.to_f32_vector()[0], 4 * 0.421875f);  // 0.75^3
  EXPECT_FLOAT_EQ(w.to_f32_vector()[1], -8 * 0.421875f);
}

TEST(Optimizer, ResumeFromStateMatchesAnUninterruptedRun) {
  // What a checkpoint holds: state() and steps(). Restoring them into a fresh optimizer after
  // step 2 must give step 3 bit for bit.
  std::vector<OptimizerOptions> configs(3);
  configs[0].lr = 0.5, configs[0].momentum = 0.5;
  configs[1].lr = 0.5, configs[1].momentum = 0.5, configs[1].nesterov = true, configs[1].weight_decay = 0.25;
  configs[2].lr = 0.1, configs[2].weight_decay = 0.1;
  const char* names[] = {"sgd", "sgd", "adamw"};
  for (int c = 0; c < 3; ++c) {
    SCOPED_TRACE(c);
    auto full = make_optimizer(names[c], configs[c]);
    std::vector<std::vector<float>> want = run3(*full, configs[c].lr);

    auto first = make_optimizer(names[c], configs[c]);
    Tensor w = Tensor::from_vector(kW0, {3});
    for (int s = 0; s < 2; ++s) first->step({w}, {Tensor::from_vector(kGrads[s], {3})}, configs[c].lr);
    auto resumed = make_optimizer(names[c], configs[c]);
    for (auto& [k, t] : first->state()) resumed->state().emplace(k, t.clone());
    resumed->set_steps(first->steps());
    Tensor w2 = w.clone();
    resumed->step({w2}, {Tensor::from_vector(kGrads[2], {3})}, configs[c].lr);
    EXPECT_EQ(w2.to_f32_vector(), want[2]);
    EXPECT_EQ(resumed->steps(), 3);
  }
}

TEST(Optimizer, BadHyperParametersAreRejectedByTheFirstStep) {
  // make_optimizer checks lr and momentum; the rest is checked (ValueError) when the update runs.
  auto try_step = [](const char* name, OptimizerOptions o) {
    auto opt = make_optimizer(name, o);
    Tensor w = Tensor::from_vector({1}, {1});
    opt->step({w}, {Tensor::from_vector({1}, {1})}, o.lr);
  };
  EXPECT_THROW(try_step("sgd", {.lr = 0.1, .weight_decay = -1}), ValueError);
  EXPECT_THROW(try_step("adamw", {.lr = 0.1, .weight_decay = -1}), ValueError);
  EXPECT_THROW(try_step("adamw", {.lr = 0.1, .beta1 = 1.0}), ValueError);
  EXPECT_THROW(try_step("adamw", {.lr = 0.1, .beta2 = -0.1}), ValueError);
  EXPECT_THROW(try_step("adamw", {.lr = 0.1, .eps = -1e-8}), ValueError);
}

TEST(LrSchedule, Constant) {
  LrSchedule s{LrSchedule::constant, 0.1};
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_DOUBLE_EQ(s.at(12345), 0.1);
  s.warmup_steps = 4;  // linear from 0: (s + 1) / 4
  EXPECT_DOUBLE_EQ(s.at(0), 0.025);
  EXPECT_DOUBLE_EQ(s.at(1), 0.05);
  EXPECT_DOUBLE_EQ(s.at(3), 0.1);
  EXPECT_DOUBLE_EQ(s.at(4), 0.1);
  EXPECT_DOUBLE_EQ(s.at(100), 0.1);
}

TEST(LrSchedule, Step) {
  LrSchedule s;
  s.kind = LrSchedule::step;
  s.base_lr = 1.0;
  s.step_size = 10;
  s.gamma = 0.5;
  EXPECT_DOUBLE_EQ(s.at(0), 1.0);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 0.5);
  EXPECT_DOUBLE_EQ(s.at(19), 0.5);
  EXPECT_DOUBLE_EQ(s.at(20), 0.25);
  EXPECT_DOUBLE_EQ(s.at(35), 0.125);
  s.step_size = 0;  // never decays
  EXPECT_DOUBLE_EQ(s.at(1000), 1.0);
}

TEST(LrSchedule, CosineWithWarmup) {
  LrSchedule s{LrSchedule::cosine, 1.0, /*warmup=*/10, /*total=*/110};
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);  // warmup (s + 1) / 10
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);                                  // progress 0
  EXPECT_NEAR(s.at(35), 0.5 * (1 + std::cos(M_PI / 4)), 1e-12);    // progress 1/4: 0.853553
  EXPECT_NEAR(s.at(60), 0.5, 1e-12);                               // progress 1/2
  EXPECT_NEAR(s.at(85), 0.5 * (1 - std::cos(M_PI / 4)), 1e-12);    // progress 3/4: 0.146447
  EXPECT_NEAR(s.at(110), 0.0, 1e-12);
  EXPECT_NEAR(s.at(500), 0.0, 1e-12) << "stays at 0 after total_steps";
  for (int64_t t = 10; t < 110; ++t) EXPECT_LE(s.at(t + 1), s.at(t)) << "monotone decay at " << t;
}

TEST(LrSchedule, FromName) {
  EXPECT_EQ(lr_schedule_from_name("constant"), LrSchedule::constant);
  EXPECT_EQ(lr_schedule_from_name("step"), LrSchedule::step);
  EXPECT_EQ(lr_schedule_from_name("cosine"), LrSchedule::cosine);
  EXPECT_THROW(lr_schedule_from_name("linear"), ValueError);
  std::string msg = message_of([] { lr_schedule_from_name("linear"); });
  EXPECT_NE(msg.find("'linear'"), std::string::npos) << msg;
}

TEST(ClipGlobalNorm, ScalesToMaxNormAndReturnsTheNormBefore) {
  // ||[3, 4, 12]|| = 13 across two tensors.
  Tensor a = Tensor::from_vector({3, 4}, {2}), b = Tensor::from_vector({12}, {1});
  EXPECT_DOUBLE_EQ(global_norm({a, b}), 13.0);
  double norm = clip_global_norm({a, b}, 6.5);
  EXPECT_NEAR(norm, 13.0, 1e-6);
  EXPECT_NEAR(a.to_f32_vector()[0], 1.5, 1e-5);
  EXPECT_NEAR(a.to_f32_vector()[1], 2.0, 1e-5);
  EXPECT_NEAR(b.to_f32_vector()[0], 6.0, 1e-5);
  EXPECT_NEAR(global_norm({a, b}), 6.5, 1e-5);
  EXPECT_LE(global_norm({a, b}), 6.5);

  // Already below max_norm: untouched.
  Tensor c = Tensor::from_vector({0.3f, -0.4f}, {2});
  EXPECT_NEAR(clip_global_norm({c}, 1.0), 0.5, 1e-7);
  EXPECT_EQ(c.to_f32_vector(), (std::vector<float>{0.3f, -0.4f}));

  EXPECT_THROW(clip_global_norm({c}, 0.0), ValueError);
  EXPECT_THROW(clip_global_norm({c}, -1.0), ValueError);
}

TEST(ClipGlobalNorm, LargeFiniteGradientsAreStillClipped) {
  // Squares of 1e20 overflow f32; the norm (1e20 sqrt(2)) is still finite and must be clipped.
  Tensor g = Tensor::from_vector({1e20f, -1e20f}, {2});
  double norm = clip_global_norm({g}, 1.0);
  EXPECT_NEAR(norm / 1e20, std::sqrt(2.0), 1e-6);
  EXPECT_NEAR(g.to_f32_vector()[0], 1 / std::sqrt(2.0), 1e-5);
  EXPECT_NEAR(g.to_f32_vector()[1], -1 / std::sqrt(2.0), 1e-5);
}

TEST(LossScaler, OverflowBacksOffCleanStepsUnscaleAndGrow) {
  LossScaler ls(/*init=*/1024, /*growth=*/2, /*backoff=*/0.5, /*growth_interval=*/3);
  EXPECT_EQ(ls.scale(), 1024);

  Tensor g = Tensor::from_vector({2048, -512, 0}, {3});
  EXPECT_TRUE(ls.unscale_and_check({g}));
  EXPECT_EQ(g.to_f32_vector(), (std::vector<float>{2, -0.5f, 0})) << "divided by the scale";
  EXPECT_EQ(ls.scale(), 1024);
  EXPECT_EQ(ls.clean_run(), 1);
  EXPECT_EQ(ls.skipped(), 0);

  // An injected Inf in one of several gradients.
  Tensor ok = Tensor::from_vector({1, 2}, {2});
  Tensor bad = Tensor::from_vector({1, std::numeric_limits<float>::infinity(), 3}, {3});
  EXPECT_FALSE(ls.unscale_and_check({ok, bad}));
  EXPECT_EQ(ls.scale(), 512);
  EXPECT_EQ(ls.skipped(), 1);
  EXPECT_EQ(ls.clean_run(), 0);

  // NaN likewise.
  bad.set_item({1}, std::numeric_limits<float>::quiet_NaN());
  EXPECT_FALSE(ls.unscale_and_check({bad}));
  EXPECT_EQ(ls.scale(), 256);
  EXPECT_EQ(ls.skipped(), 2);

  // growth_interval (3) clean steps in a row: x2 after the third.
  for (int i = 0; i < 3; ++i) {
    Tensor c = Tensor::from_vector({256, 512}, {2});
    EXPECT_EQ(ls.scale(), 256) << "before clean step " << i;
    EXPECT_TRUE(ls.unscale_and_check({c}));
    EXPECT_EQ(c.to_f32_vector(), (std::vector<float>{1, 2}));
  }
  EXPECT_EQ(ls.scale(), 512);
  EXPECT_EQ(ls.clean_run(), 0);
  EXPECT_EQ(ls.skipped(), 2);

  // An overflow in the middle of a clean run restarts the count.
  Tensor c = Tensor::from_vector({1}, {1});
  EXPECT_TRUE(ls.unscale_and_check({c}));
  EXPECT_TRUE(ls.unscale_and_check({c}));
  EXPECT_FALSE(ls.unscale_and_check({bad}));
  EXPECT_EQ(ls.scale(), 256);
  EXPECT_TRUE(ls.unscale_and_check({c}));
  EXPECT_TRUE(ls.unscale_and_check({c}));
  EXPECT_EQ(ls.scale(), 256);
  EXPECT_TRUE(ls.unscale_and_check({c}));
  EXPECT_EQ(ls.scale(), 512);
}

TEST(LossScaler, BackoffFloorsAtOne) {
  LossScaler ls(2, 2, 0.5, 100);
  Tensor bad = Tensor::from_vector({std::numeric_limits<float>::infinity()}, {1});
  EXPECT_FALSE(ls.unscale_and_check({bad}));
  EXPECT_EQ(ls.scale(), 1);
  EXPECT_FALSE(ls.unscale_and_check({bad}));
  EXPECT_EQ(ls.scale(), 1);
  EXPECT_EQ(ls.skipped(), 2);
}

TEST(LossScaler, LargeFiniteGradientsAreNotAnOverflow) {
  // Every element is finite; only their squares overflow f32. The step must be applied.
  LossScaler ls(65536, 2, 0.5, 2000);
  Tensor g = Tensor::from_vector({1e20f, -3e19f}, {2});
  EXPECT_TRUE(ls.unscale_and_check({g}));
  EXPECT_EQ(ls.skipped(), 0);
  EXPECT_EQ(ls.scale(), 65536);
  EXPECT_NEAR(g.to_f32_vector()[0], 1e20 / 65536, 1e20 / 65536 * 1e-6);
}

TEST(LossScaler, BadSettings) {
  EXPECT_THROW(LossScaler(0), ValueError);
  EXPECT_THROW(LossScaler(1024, 1.0), ValueError);
  EXPECT_THROW(LossScaler(1024, 2.0, 1.0), ValueError);
  EXPECT_THROW(LossScaler(1024, 2.0, 0.5, 0), ValueError);
}

TEST(MakeOptimizer, BadInputsNameTheValue) {
  EXPECT_THROW(make_optimizer("adam", {}), ValueError);
  std::string msg = message_of([] { make_optimizer("adam", {}); });
  EXPECT_NE(msg.find("'adam'"), std::string::npos) << msg;

  EXPECT_THROW(make_optimizer("sgd", {.lr = -0.5}), ValueError);
  msg = message_of([] { make_optimizer("sgd", {.lr = -0.5}); });
  EXPECT_NE(msg.find("-0.5"), std::string::npos) << msg;
  EXPECT_THROW(make_optimizer("adamw", {.lr = std::numeric_limits<double>::quiet_NaN()}), ValueError);

  EXPECT_THROW(make_optimizer("sgd", {.lr = 0.1, .momentum = 1.0}), ValueError);
  msg = message_of([] { make_optimizer("sgd", {.lr = 0.1, .momentum = 1.0}); });
  EXPECT_NE(msg.find("momentum 1 "), std::string::npos) << msg;
  EXPECT_THROW(make_optimizer("sgd", {.lr = 0.1, .momentum = -0.1}), ValueError);

  EXPECT_THROW(make_optimizer("sgd", {.lr = 0.1, .nesterov = true}), ValueError);
  EXPECT_NO_THROW(make_optimizer("sgd", {.lr = 0.0, .momentum = 0.0}));
}

}  // namespace
}  // namespace tessera
