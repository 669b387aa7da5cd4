// Convolution forward and both backwards against the direct double-precision reference over a
// grid of shapes, at every ISA rung, in f32, bf16 and cfp8; and pooling against naive loops.
#include <tessera/core/bf16.h>
#include <tessera/kernels/conv2d.h>
#include <tessera/kernels/cpu.h>
#include <tessera/kernels/pool2d.h>
#include <tessera/kernels/reduce.h>

#include <gtest/gtest.h>
#include <oneapi/tbb/task_arena.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

namespace tessera::kernels {
namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> rounded(const std::vector<float>& v, DType t, Cfp8Format f) {
  std::vector<float> out(v);
  for (auto& x : out) x = t == DType::bf16 ? round_to_bf16(x) : is_cfp8(t) ? cfp8_decode(cfp8_encode(x, f), f) : x;
  return out;
}

// Max |a - b| relative to the largest |b| (the reference).
double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 1e-12;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return worst / scale;
}

struct Shape {
  int64_t N, H, W, C, K, R, S, stride, pad, dil;
};

const Shape kShapes[] = {
    {2, 7, 7, 3, 5, 3, 3, 1, 1, 1},   {1, 9, 11, 4, 6, 3, 3, 2, 0, 1},  {2, 8, 8, 16, 17, 3, 3, 1, 2, 1},
    {1, 13, 9, 5, 7, 5, 5, 1, 2, 1},  {3, 6, 6, 8, 4, 1, 1, 1, 0, 1},   {2, 10, 10, 3, 8, 3, 3, 1, 2, 2},
    {1, 12, 12, 17, 33, 3, 3, 2, 1, 1}, {2, 5, 7, 1, 32, 3, 3, 1, 1, 1}, {1, 11, 11, 6, 3, 5, 5, 2, 2, 2},
    {2, 4, 4, 32, 16, 1, 1, 2, 0, 1},
    // Full register tiles, several 64-channel column blocks, masked tails, the cnn's first
    // layer, and padding wider than the filter (backward data then falls back to the GEMM).
    {2, 9, 9, 64, 70, 3, 3, 1, 1, 1}, {1, 6, 7, 20, 130, 3, 3, 1, 1, 1}, {3, 14, 14, 1, 32, 3, 3, 1, 1, 1},
    {1, 8, 8, 8, 48, 3, 3, 1, 3, 1},  {2, 9, 8, 24, 40, 2, 3, 1, 1, 2},
};

struct Case {
  Isa isa;
  DType compute;
};

class Conv2dRung : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (GetParam().isa > cpu_isa() || GetParam().isa > compiled_isa()) GTEST_SKIP() << "rung unavailable";
    cap_ = std::make_unique<ScopedIsaCap>(GetParam().isa);
  }
  std::unique_ptr<ScopedIsaCap> cap_;
};

TEST_P(Conv2dRung, MatchesReferenceOnShapeGrid) {
  const DType t = GetParam().compute;
  const bool direct_rung = GetParam().isa >= Isa::avx512 && compiled_isa() >= Isa::avx512;
  for (Conv2dAlgo algo : {Conv2dAlgo::direct, Conv2dAlgo::gemm})
  for (size_t ws : {size_t{8} << 20, size_t{700}}) {  // the small workspace forces many chunks
    set_conv2d_workspace_bytes(ws);
    set_conv2d_algorithm(algo);
    for (const Shape& s : kShapes) {
      Conv2dDesc d;
      d.N = s.N; d.H = s.H; d.W = s.W; d.C = s.C; d.K = s.K; d.R = s.R; d.S = s.S;
      d.stride_h = d.stride_w = s.stride;
      d.pad_h = d.pad_w = s.pad;
      d.dil_h = d.dil_w = s.dil;
      d.compute = t;
      d.x_fmt = {Cfp8Layout::e4m3, 8};
      d.w_fmt = {Cfp8Layout::e4m3, 9};
      d.dy_fmt = {Cfp8Layout::e5m2, 16};
      const int64_t OH = d.OH(), OW = d.OW();
      auto x = randn(d.N * d.H * d.W * d.C, 1), w = randn(d.R * d.S * d.C * d.K, 2);
      auto b = randn(d.K, 3), dy = randn(d.N * OH * OW * d.K, 4);
      auto xr = rounded(x, t, d.x_fmt), wr = rounded(w, t, d.w_fmt), dyr = rounded(dy, t, d.dy_fmt);
      std::vector<float> y(dy.size(), std::nanf("")), yref(dy.size());
      conv2d_forward(d, x.data(), w.data(), b.data(), y.data());
      conv2d_forward_reference(d, xr.data(), wr.data(), b.data(), yref.data());
      double tol = t == DType::f32 ? 1e-5 : 1e-4;  // operands are rounded alike: only sum order differs
      SCOPED_TRACE(testing::Message() << "N" << s.N << " " << s.H << "x" << s.W << " C" << s.C << " K" << s.K << " "
                                      << s.R << "x" << s.S << " stride " << s.stride << " pad " << s.pad << " dil "
                                      << s.dil << " ws " << ws);
      // The requested algorithm ran where it applies.
      const bool direct = algo == Conv2dAlgo::direct && direct_rung;
      const bool direct_bwd_data = direct && s.stride == 1 && s.pad <= s.dil * (s.R - 1);
      EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::forward), direct ? "direct_avx512" : "gemm");
      EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::backward_data), direct_bwd_data ? "direct_avx512" : "gemm");
      EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::backward_weights), direct ? "direct_avx512" : "gemm");
      EXPECT_LT(rel_err(y, yref), tol) << "forward";

      std::vector<float> dx(x.size(), std::nanf("")), dxref(x.size());
      conv2d_backward_data(d, dy.data(), w.data(), dx.data());
      conv2d_backward_data_reference(d, dyr.data(), wr.data(), dxref.data());
      EXPECT_LT(rel_err(dx, dxref), tol) << "backward data";

      std::vector<float> dw(w.size(), std::nanf("")), dwref(w.size()), db(d.K), dbref(d.K);
      conv2d_backward_weights(d, x.data(), dy.data(), dw.data(), db.data());
      conv2d_backward_weights_reference(d, xr.data(), dyr.data(), dwref.data(), dbref.data());
      EXPECT_LT(rel_err(dw, dwref), tol) << "backward weights";
      // The bias gradient sums the unrounded f32 dy.
      std::vector<float> dwu(w.size()), dbu(d.K);
      conv2d_backward_weights_reference(d, xr.data(), dy.data(), dwu.data(), dbu.data());
      EXPECT_LT(rel_err(db, dbu), 1e-5) << "bias gradient";
    }
  }
  set_conv2d_workspace_bytes(size_t{8} << 20);
  set_conv2d_algorithm(Conv2dAlgo::automatic);
}

std::vector<Case> cases() {
  std::vector<Case> out;
  for (Isa isa : kAllIsas) {
    out.push_back({isa, DType::f32});
    out.push_back({isa, DType::bf16});
    out.push_back({isa, DType::cfp8_e4m3});
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllRungs, Conv2dRung, ::testing::ValuesIn(cases()), [](const auto& i) {
  return std::string(isa_name(i.param.isa)) + "_" + dtype_name(i.param.compute);
});

// Results do not depend on the thread count (the weight gradient's pixel partitions are fixed by
// the problem size), on either algorithm and in every compute type.
TEST(Conv2d, SameBitsOnOneAndTwoThreads) {
  // C = 32: dy rounded in a pass of its own, bias gradient separate; C = 1 (a first layer): dy
  // rounded as loaded, bias gradient fused into the weight-gradient kernel's blocks.
  for (int64_t C : {32, 1}) {
    Conv2dDesc d;
    d.N = 8; d.H = d.W = C == 1 ? 28 : 14; d.C = C; d.K = C == 1 ? 32 : 64; d.R = d.S = 3; d.pad_h = d.pad_w = 1;
    auto x = randn(d.N * d.H * d.W * d.C, 5), w = randn(9 * d.C * d.K, 6), dy = randn(d.N * d.H * d.W * d.K, 7);
    for (Conv2dAlgo algo : {Conv2dAlgo::automatic, Conv2dAlgo::gemm}) {
      for (DType t : {DType::f32, DType::bf16, DType::cfp8_e4m3}) {
        set_conv2d_algorithm(algo);
        d.compute = t;
        std::vector<float> y[2], dx[2], dw[2], db[2];
        for (int threads : {1, 2}) {
          auto& yi = y[threads - 1];
          auto& dxi = dx[threads - 1];
          auto& dwi = dw[threads - 1];
          auto& dbi = db[threads - 1];
          yi.resize(dy.size());
          dxi.resize(x.size());
          dwi.resize(w.size());
          dbi.resize(static_cast<size_t>(d.K));
          tbb::task_arena(threads).execute([&] {
            conv2d_forward(d, x.data(), w.data(), nullptr, yi.data(), Epilogue::relu);
            conv2d_backward_data(d, dy.data(), w.data(), dxi.data());
            conv2d_backward_weights(d, x.data(), dy.data(), dwi.data(), dbi.data());
          });
        }
        SCOPED_TRACE(std::string(dtype_name(t)) + " C=" + std::to_string(C) + " " + conv2d_impl_name(d, Conv2dPass::forward));
        EXPECT_EQ(y[0], y[1]);
        EXPECT_EQ(dx[0], dx[1]);
        EXPECT_EQ(dw[0], dw[1]);
        EXPECT_EQ(db[0], db[1]);
      }
    }
  }
  set_conv2d_algorithm(Conv2dAlgo::automatic);
}

TEST(Conv2d, AutomaticChoiceFollowsTheIsaCap) {
  Conv2dDesc d;
  d.N = 1; d.H = d.W = 8; d.C = 4; d.K = 8; d.R = d.S = 3; d.pad_h = d.pad_w = 1;
  {
    ScopedIsaCap cap(Isa::avx2);
    EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::forward), "gemm");
  }
  if (cpu_isa() >= Isa::avx512 && compiled_isa() >= Isa::avx512) {
    EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::forward), "direct_avx512");  // f32: always FMA
    set_conv2d_algorithm(Conv2dAlgo::gemm);
    EXPECT_STREQ(conv2d_impl_name(d, Conv2dPass::forward), "gemm");
    set_conv2d_algorithm(Conv2dAlgo::automatic);
  }
}

TEST(Conv2d, BadDescriptorsNameTheValues) {
  Conv2dDesc d;
  d.N = 1; d.H = 2; d.W = 2; d.C = 1; d.K = 1; d.R = 5; d.S = 5;
  try {
    conv2d_validate(d);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("5x5"), std::string::npos) << e.what();
  }
  d.R = d.S = 1;
  d.stride_h = 0;
  EXPECT_THROW(conv2d_validate(d), ValueError);
  d.stride_h = 1;
  d.compute = DType::i32;
  EXPECT_THROW(conv2d_validate(d), TypeError);
  d.compute = DType::cfp8_e4m3;
  d.w_fmt.bias = 64;
  EXPECT_THROW(conv2d_validate(d), ValueError);
}

// ---- pooling ----

void naive_pool(const Pool2dDesc& p, const std::vector<float>& x, bool max, std::vector<float>& y) {
  y.assign(p.N * p.OH() * p.OW() * p.C, 0);
  for (int64_t n = 0; n < p.N; ++n)
    for (int64_t oh = 0; oh < p.OH(); ++oh)
      for (int64_t ow = 0; ow < p.OW(); ++ow)
        for (int64_t c = 0; c < p.C; ++c) {
          double acc = max ? -std::numeric_limits<double>::infinity() : 0;
          for (int64_t r = 0; r < p.R; ++r)
            for (int64_t s = 0; s < p.S; ++s) {
              int64_t ih = oh * p.stride_h - p.pad_h + r, iw = ow * p.stride_w - p.pad_w + s;
              if (ih < 0 || ih >= p.H || iw < 0 || iw >= p.W) continue;
              double v = x[((n * p.H + ih) * p.W + iw) * p.C + c];
              acc = max ? std::max(acc, v) : acc + v;
            }
          y[((n * p.OH() + oh) * p.OW() + ow) * p.C + c] = static_cast<float>(max ? acc : acc / (p.R * p.S));
        }
}

// At every rung (the same loops compiled per ISA, pool2d_loops.h), against naive loops; the
// descriptors include windows that tile the input (the backward's write-once path) with odd
// sizes whose last row/column no window covers, overlapping windows and padding.
class PoolRung : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu_isa() || GetParam() > compiled_isa()) GTEST_SKIP() << "rung unavailable";
    cap_ = std::make_unique<ScopedIsaCap>(GetParam());
  }
  std::unique_ptr<ScopedIsaCap> cap_;
};
INSTANTIATE_TEST_SUITE_P(Rungs, PoolRung, ::testing::Values(Isa::scalar, Isa::avx512),
                         [](const auto& i) { return std::string(isa_name(i.param)); });

TEST_P(PoolRung, ForwardAndBackwardMatchNaiveLoops) {
  EXPECT_STREQ(pool2d_impl_name(), GetParam() >= Isa::avx512 ? "avx512" : "scalar");
  const Pool2dDesc descs[] = {
      {2, 28, 28, 32, 2, 2, 2, 2, 0, 0}, {1, 7, 9, 3, 3, 3, 2, 2, 1, 1}, {3, 5, 5, 17, 2, 2, 1, 1, 0, 0},
      {1, 14, 14, 64, 2, 2, 2, 2, 0, 0}, {2, 6, 7, 1, 3, 2, 1, 2, 1, 0},  {2, 7, 9, 20, 2, 2, 2, 2, 0, 0},
      {1, 9, 8, 33, 3, 2, 3, 2, 0, 0},
  };
  for (const auto& p : descs) {
    auto x = randn(p.N * p.H * p.W * p.C, 7);
    std::vector<float> y(p.N * p.OH() * p.OW() * p.C), yref;
    std::vector<int32_t> arg(y.size());
    maxpool2d_forward(p, x.data(), y.data(), arg.data());
    naive_pool(p, x, true, yref);
    EXPECT_EQ(y, yref);
    avgpool2d_forward(p, x.data(), y.data());
    naive_pool(p, x, false, yref);
    EXPECT_LT(rel_err(y, yref), 1e-6);

    // Backward = the transpose of the forward: <dy, pool(x + e_i)> - <dy, pool(x)> checks via
    // linearity for avg, and via the argmax routing for max.
    auto dy = randn(y.size(), 8);
    std::vector<float> dx(x.size());
    std::fill(dx.begin(), dx.end(), std::nanf(""));  // every element must be written
    maxpool2d_backward(p, dy.data(), arg.data(), dx.data());
    std::vector<double> expect(x.size(), 0);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t o = 0; o < p.OH() * p.OW(); ++o)
        for (int64_t c = 0; c < p.C; ++c) {
          int64_t i = (n * p.OH() * p.OW() + o) * p.C + c;
          int64_t src = (n * p.H * p.W + arg[i]) * p.C + c;
          ASSERT_EQ(x[src], yref.size() ? x[src] : 0);  // the index is inside the image
          expect[src] += dy[i];
        }
    for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(dx[i], expect[i], 1e-5);
    // Where no two windows overlap, each gradient is copied: exact, and never -0.
    if (p.stride_h >= p.R && p.stride_w >= p.S) {
      for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(dx[i], static_cast<float>(expect[i])) << i;
      std::vector<float> negz(dy.size(), -0.0f);
      maxpool2d_backward(p, negz.data(), arg.data(), dx.data());
      for (float v : dx) ASSERT_FALSE(std::signbit(v)) << "0 + (-0) is +0";
    }
    // With a relu mask: relu_backward(mask, dx) in the same pass, bit for bit.
    {
      std::vector<float> plain(x.size()), masked(x.size(), std::nanf("")), mask = randn(x.size(), 9);
      mask[0] = std::nanf("");  // NaN is not > 0
      for (size_t i = 1; i < mask.size(); i += 3) mask[i] = i % 2 ? 0.0f : -0.0f;  // zeros are not > 0
      maxpool2d_backward(p, dy.data(), arg.data(), plain.data());
      maxpool2d_backward(p, dy.data(), arg.data(), masked.data(), mask.data());
      for (size_t i = 0; i < x.size(); ++i) {
        const float want = mask[i] > 0.0f ? plain[i] : 0.0f;
        ASSERT_EQ(std::memcmp(&masked[i], &want, sizeof(float)), 0) << i << ": " << masked[i] << " vs " << want;
      }
    }
    std::fill(dx.begin(), dx.end(), std::nanf(""));
    avgpool2d_backward(p, dy.data(), dx.data());
    // <dy, avg(x)> == <avg^T(dy), x>
    std::vector<float> ya;
    naive_pool(p, x, false, ya);
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < ya.size(); ++i) lhs += static_cast<double>(dy[i]) * ya[i];
    for (size_t i = 0; i < x.size(); ++i) rhs += static_cast<double>(dx[i]) * x[i];
    EXPECT_NEAR(lhs, rhs, 1e-4 * std::max(1.0, std::fabs(lhs)));
  }
}

// The amax the max-pool passes measure while writing equals a separate scan of their output,
// NaN included.
TEST_P(PoolRung, MaxPoolAmaxMatchesAScanOfTheOutput) {
  const Pool2dDesc descs[] = {{4, 28, 28, 32, 2, 2, 2, 2, 0, 0}, {2, 7, 9, 20, 2, 2, 2, 2, 0, 0},
                              {1, 7, 9, 3, 3, 3, 2, 2, 1, 1}};
  for (const auto& p : descs) {
    for (bool with_nan : {false, true}) {
      auto x = randn(p.N * p.H * p.W * p.C, 11);
      std::vector<float> y(p.N * p.OH() * p.OW() * p.C);
      std::vector<int32_t> arg(y.size());
      if (with_nan) x[x.size() / 2] = std::nanf("");
      float a = -1.f;
      maxpool2d_forward(p, x.data(), y.data(), arg.data(), &a);
      if (with_nan) {
        EXPECT_TRUE(std::isnan(a));
      } else {
        EXPECT_EQ(a, amax(y.data(), y.size()));
      }
      auto dy = randn(y.size(), 12);
      dy[3] = -7.5f;  // the largest magnitude is negative
      if (with_nan) dy[y.size() - 1] = std::nanf("");
      auto mask = randn(x.size(), 13);
      for (const float* m : {static_cast<const float*>(nullptr), static_cast<const float*>(mask.data())}) {
        std::vector<float> dx(x.size());
        float b = -1.f;
        maxpool2d_backward(p, dy.data(), arg.data(), dx.data(), m, &b);
        const float want = amax(dx.data(), dx.size());
        if (std::isnan(want)) {
          EXPECT_TRUE(std::isnan(b));
        } else {
          EXPECT_EQ(b, want);
        }
      }
    }
  }
}

TEST(Pool2d, MaxPropagatesNaNAndRejectsBadWindows) {
  Pool2dDesc p{1, 2, 2, 1, 2, 2, 2, 2, 0, 0};
  std::vector<float> x{1, std::nanf(""), 3, 2}, y(1);
  std::vector<int32_t> a(1);
  maxpool2d_forward(p, x.data(), y.data(), a.data());
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(a[0], 1);
  Pool2dDesc bad{1, 2, 2, 1, 3, 3, 1, 1, 0, 0};
  EXPECT_THROW(pool2d_validate(bad), ValueError);
}

}  // namespace
}  // namespace tessera::kernels
