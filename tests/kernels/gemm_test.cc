// GEMM at every ISA rung against a double-precision oracle computed here on the decoded operand
// values. Tolerances follow the f32 accumulation bound: |error| <= (K + 4) 2^-23 sum|a b|,
// plus half a bf16 ulp for bf16 output and the gelu slope / erf approximation when it applies.
#include <tessera/kernels/gemm.h>

#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>
#include <tessera/core/error.h>
#include <tessera/kernels/cpu.h>
#include <tessera/kernels/gemm_driver.h>

#include <gtest/gtest.h>
#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::kernels {
namespace {

// A stored row-major matrix of any operand type, with garbage in the padding past `cols`.
struct Mat {
  DType type = DType::f32;
  Cfp8Format fmt;
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<uint8_t> bytes;

  double get(int64_t r, int64_t c) const {
    const int64_t i = r * ld + c;
    switch (type) {
      case DType::f32: {
        float f;
        std::memcpy(&f, &bytes[4 * i], 4);
        return f;
      }
      case DType::bf16: {
        uint16_t h;
        std::memcpy(&h, &bytes[2 * i], 2);
        return bf16_to_f32(h);
      }
      default: return cfp8_decode(bytes[i], fmt);
    }
  }
  void* data() { return bytes.empty() ? nullptr : bytes.data(); }
};

Mat random_mat(DType t, int bias, int64_t rows, int64_t cols, int64_t ld, std::mt19937& rng) {
  Mat m;
  m.type = t;
  if (is_cfp8(t)) m.fmt = gemm_cfp8_format(t, bias);
  m.rows = rows;
  m.cols = cols;
  m.ld = ld;
  const size_t es = dtype_size(t);
  m.bytes.resize(static_cast<size_t>(rows * ld) * es);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> code(0, 255);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < ld; ++c) {
      uint8_t* p = &m.bytes[static_cast<size_t>(r * ld + c) * es];
      const bool pad = c >= cols;  // must never be read: poison it
      if (t == DType::f32) {
        const float f = pad ? std::numeric_limits<float>::quiet_NaN() : u(rng);
        std::memcpy(p, &f, 4);
      } else if (t == DType::bf16) {
        const uint16_t h = pad ? uint16_t{0x7fc0} : f32_to_bf16(u(rng));
        std::memcpy(p, &h, 2);
      } else {
        *p = pad ? uint8_t{0x7f} : static_cast<uint8_t>(code(rng));  // 0x7f: +max
      }
    }
  }
  return m;
}

struct Case {
  int64_t M = 1, N = 1, K = 1;
  bool ta = false, tb = false;
  DType at = DType::f32, bt = DType::f32, ct = DType::f32;
  int abias = -1, bbias = -1;
  float alpha = 1.f, beta = 0.f;
  Epilogue ep = Epilogue::none;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra leading-dimension elements
  bool use_reference = false;               // call gemm_reference instead of gemm
};

std::string describe(const Case& c) {
  std::ostringstream os;
  os << "M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.ta << " tb=" << c.tb
     << " a=" << dtype_name(c.at) << "(" << c.abias << ") b=" << dtype_name(c.bt) << "(" << c.bbias
     << ") c=" << dtype_name(c.ct) << " alpha=" << c.alpha << " beta=" << c.beta
     << " ep=" << epilogue_name(c.ep) << " pads=" << c.pad_a << "," << c.pad_b << "," << c.pad_c
     << " impl=" << (c.use_reference ? "reference(direct)" : "");
  return os.str();
}

bool has_bias(Epilogue e) {
  return e == Epilogue::bias || e == Epilogue::bias_relu || e == Epilogue::bias_gelu;
}

double gelu_exact(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

// Runs one case and checks every element of C (and that padding of C is untouched).
void run_case(const Case& c, uint64_t seed = 1) {
  std::mt19937 rng(static_cast<uint32_t>(seed * 7919 + c.M * 31 + c.N * 17 + c.K));
  const int64_t a_rows = c.ta ? c.K : c.M, a_cols = c.ta ? c.M : c.K;
  const int64_t b_rows = c.tb ? c.N : c.K, b_cols = c.tb ? c.K : c.N;
  Mat A = random_mat(c.at, c.abias, a_rows, a_cols, a_cols + c.pad_a, rng);
  Mat B = random_mat(c.bt, c.bbias, b_rows, b_cols, b_cols + c.pad_b, rng);
  // C: random where beta reads it, NaN where beta == 0 must not; padding is a sentinel.
  const int64_t ldc = c.N + c.pad_c;
  Mat C = random_mat(c.ct, -1, c.M, c.N, ldc, rng);
  if (c.beta == 0.f) {
    for (int64_t i = 0; i < c.M; ++i) {
      for (int64_t j = 0; j < c.N; ++j) {
        if (c.ct == DType::f32) {
          const float nan = std::numeric_limits<float>::quiet_NaN();
          std::memcpy(&C.bytes[4 * (i * ldc + j)], &nan, 4);
        } else {
          const uint16_t nan = 0x7fc0;
          std::memcpy(&C.bytes[2 * (i * ldc + j)], &nan, 2);
        }
      }
    }
  }
  const Mat C0 = C;
  std::vector<float> bias(static_cast<size_t>(c.N));
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& b : bias) b = u(rng);

  GemmDesc d;
  d.M = c.M;
  d.N = c.N;
  d.K = c.K;
  d.trans_a = c.ta;
  d.trans_b = c.tb;
  d.a_type = c.at;
  d.b_type = c.bt;
  d.a_bias = c.abias;
  d.b_bias = c.bbias;
  d.c_type = c.ct;
  d.lda = c.pad_a ? A.ld : 0;
  d.ldb = c.pad_b ? B.ld : 0;
  d.ldc = c.pad_c ? ldc : 0;
  d.alpha = c.alpha;
  d.beta = c.beta;
  d.epilogue = c.ep;
  d.bias = has_bias(c.ep) ? bias.data() : nullptr;
  if (c.use_reference) {
    gemm_reference(d, A.data(), B.data(), C.data());
  } else {
    gemm(d, A.data(), B.data(), C.data());
  }

  // Oracle on decoded values.
  std::vector<double> opa(static_cast<size_t>(c.M * c.K)), opb(static_cast<size_t>(c.K * c.N));
  for (int64_t i = 0; i < c.M; ++i) {
    for (int64_t k = 0; k < c.K; ++k) opa[i * c.K + k] = c.ta ? A.get(k, i) : A.get(i, k);
  }
  for (int64_t k = 0; k < c.K; ++k) {
    for (int64_t j = 0; j < c.N; ++j) opb[k * c.N + j] = c.tb ? B.get(j, k) : B.get(k, j);
  }
  const bool relu = c.ep == Epilogue::relu || c.ep == Epilogue::bias_relu;
  const bool gelu = c.ep == Epilogue::gelu || c.ep == Epilogue::bias_gelu;
  const double u32 = std::ldexp(1.0, -23);
  int bad = 0;
  std::vector<double> sum(static_cast<size_t>(c.N)), mag(static_cast<size_t>(c.N));
  for (int64_t i = 0; i < c.M; ++i) {
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(mag.begin(), mag.end(), 0.0);
    for (int64_t k = 0; k < c.K; ++k) {
      const double a = opa[i * c.K + k];
      for (int64_t j = 0; j < c.N; ++j) {
        sum[j] += a * opb[k * c.N + j];
        mag[j] += std::fabs(a * opb[k * c.N + j]);
      }
    }
    for (int64_t j = 0; j < c.N; ++j) {
      double x = c.alpha * sum[j];
      double tol = (c.K + 4) * u32 * std::fabs(c.alpha) * mag[j];
      if (c.beta != 0.f) {
        const double c0 = C0.get(i, j);
        x += c.beta * c0;
        tol += 4 * u32 * (std::fabs(c.beta * c0) + std::fabs(x));
      }
      if (has_bias(c.ep)) {
        x += bias[j];
        tol += 4 * u32 * (std::fabs(bias[j]) + std::fabs(x));
      }
      if (relu) x = x < 0 ? 0 : x;
      if (gelu) {
        tol = 1.2 * tol + 1e-6 * std::fabs(x) + 4 * u32 * std::fabs(gelu_exact(x));
        x = gelu_exact(x);
      }
      if (c.ct == DType::bf16) tol += std::ldexp(1.0, -8) * (std::fabs(x) + tol);
      tol += 1e-30;
      const double got = C.get(i, j);
      if (!(std::fabs(got - x) <= tol)) {
        if (++bad <= 5) {
          ADD_FAILURE() << describe(c) << ": C[" << i << "][" << j << "] = " << got
                        << ", expected " << x << " (tolerance " << tol << ")";
        }
      }
    }
    for (int64_t j = c.N; j < ldc; ++j) {  // padding of C untouched
      const size_t es = dtype_size(c.ct), off = static_cast<size_t>(i * ldc + j) * es;
      if (std::memcmp(&C.bytes[off], &C0.bytes[off], es) != 0 && ++bad <= 5) {
        ADD_FAILURE() << describe(c) << ": padding C[" << i << "][" << j << "] was written";
      }
    }
  }
  if (bad > 5) ADD_FAILURE() << describe(c) << ": " << bad << " bad elements in total";
}

const int64_t kDims[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 64, 127, 255, 511};

// ---- per-rung tests ----------------------------------------------------------------------------

class GemmRung : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    const Isa rung = GetParam();
    if (rung > cpu_isa()) GTEST_SKIP() << "this CPU lacks " << isa_name(rung);
    if (rung > compiled_isa()) GTEST_SKIP() << isa_name(rung) << " not compiled in";
    cap_ = std::make_unique<ScopedIsaCap>(rung);
    tune({});
  }
  void TearDown() override { gemm_set_tuning({}); }
  // At the avx512_bf16 rung bf16 / cfp8 always run on vdpbf16ps here, even where dispatch
  // would widen them to f32 because vdpbf16ps is slower on this CPU (AutoPolicy covers that).
  void tune(GemmTuning t) {
    t.bf16_dot = GetParam() == Isa::avx512_bf16 ? 1 : -1;
    gemm_set_tuning(t);
  }
  std::unique_ptr<ScopedIsaCap> cap_;
};

std::string rung_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

TEST_P(GemmRung, PicksTheExpectedImplementation) {
  GemmDesc f32;
  GemmDesc narrow;
  narrow.a_type = narrow.b_type = DType::bf16;
  const char* expect_f32 = "";
  const char* expect_narrow = "";
  switch (GetParam()) {
    case Isa::scalar: expect_f32 = expect_narrow = "reference"; break;
    case Isa::avx2: expect_f32 = expect_narrow = "avx2"; break;
    case Isa::avx512: expect_f32 = expect_narrow = "avx512"; break;
    case Isa::avx512_bf16:
      expect_f32 = "avx512";  // f32 operands never go through bf16 dot products
      expect_narrow = "avx512_bf16";
      break;
  }
  EXPECT_STREQ(gemm_impl_name(f32), expect_f32);
  EXPECT_STREQ(gemm_impl_name(narrow), expect_narrow);
  narrow.a_type = DType::cfp8_e4m3;
  EXPECT_STREQ(gemm_impl_name(narrow), expect_narrow);
}

// Each of M, N, K over kDims with the other two at a couple of values, all four transposes.
void sweep_dims(DType at, DType bt, DType ct, int abias = -1, int bbias = -1) {
  const int64_t others[][2] = {{17, 33}, {64, 5}};
  for (int dim = 0; dim < 3; ++dim) {
    for (int64_t v : kDims) {
      for (const auto& o : others) {
        for (int t = 0; t < 4; ++t) {
          Case c;
          c.at = at;
          c.bt = bt;
          c.ct = ct;
          c.abias = abias;
          c.bbias = bbias;
          c.ta = t & 1;
          c.tb = t & 2;
          int64_t* dims[3] = {&c.M, &c.N, &c.K};
          *dims[dim] = v;
          *dims[(dim + 1) % 3] = o[0];
          *dims[(dim + 2) % 3] = o[1];
          run_case(c);
          if (::testing::Test::HasFailure()) return;
        }
      }
    }
  }
}

TEST_P(GemmRung, ShapesF32) { sweep_dims(DType::f32, DType::f32, DType::f32); }
TEST_P(GemmRung, ShapesBf16) { sweep_dims(DType::bf16, DType::bf16, DType::f32); }
TEST_P(GemmRung, ShapesCfp8) {
  sweep_dims(DType::cfp8_e4m3, DType::cfp8_e5m2, DType::bf16, /*abias=*/4, /*bbias=*/20);
}

TEST_P(GemmRung, LargerMixedShapes) {
  struct S {
    int64_t M, N, K;
  };
  const S shapes[] = {{300, 257, 129}, {129, 300, 257}, {257, 129, 300}, {64, 512, 784},
                      {784, 512, 64},  {600, 100, 40},  {33, 1000, 65}};
  const DType types[][3] = {{DType::f32, DType::f32, DType::f32},
                            {DType::bf16, DType::bf16, DType::bf16},
                            {DType::cfp8_e4m3, DType::bf16, DType::f32},
                            {DType::bf16, DType::cfp8_e5m2, DType::f32},
                            {DType::cfp8_e4m3, DType::cfp8_e4m3, DType::bf16}};
  int n = 0;
  for (const S& s : shapes) {
    for (const auto& ty : types) {
      Case c;
      c.M = s.M;
      c.N = s.N;
      c.K = s.K;
      c.at = ty[0];
      c.bt = ty[1];
      c.ct = ty[2];
      c.ta = n & 1;
      c.tb = n & 2;
      c.beta = (n % 3 == 0) ? 0.5f : 0.f;
      c.ep = static_cast<Epilogue>(n % 6);
      ++n;
      run_case(c);
      if (HasFailure()) return;
    }
  }
}

TEST_P(GemmRung, AlphaBetaEpiloguesAndBf16Output) {
  const Epilogue eps[] = {Epilogue::none, Epilogue::bias, Epilogue::relu,
                          Epilogue::gelu, Epilogue::bias_relu, Epilogue::bias_gelu};
  const float ab[][2] = {{1.f, 0.f}, {1.f, 1.f}, {-0.75f, 0.f}, {2.5f, -1.5f}, {0.f, 2.f}};
  for (DType ct : {DType::f32, DType::bf16}) {
    for (Epilogue ep : eps) {
      for (const auto& p : ab) {
        for (DType in : {DType::f32, DType::bf16, DType::cfp8_e4m3}) {
          Case c;
          c.M = 37;
          c.N = 70;
          c.K = 45;
          c.at = c.bt = in;
          c.ct = ct;
          c.alpha = p[0];
          c.beta = p[1];
          c.ep = ep;
          c.ta = ep == Epilogue::gelu;
          c.tb = ct == DType::bf16;
          run_case(c);
          if (HasFailure()) return;
        }
      }
    }
  }
}

TEST_P(GemmRung, LeadingDimensionsLargerThanWidth) {
  for (int t = 0; t < 4; ++t) {
    for (DType ty : {DType::f32, DType::bf16, DType::cfp8_e5m2}) {
      for (DType ct : {DType::f32, DType::bf16}) {
        Case c;
        c.M = 45;
        c.N = 51;
        c.K = 39;
        c.ta = t & 1;
        c.tb = t & 2;
        c.at = c.bt = ty;
        c.ct = ct;
        c.pad_a = 3;
        c.pad_b = 17;
        c.pad_c = 5;
        c.beta = t == 2 ? 1.f : 0.f;
        c.ep = Epilogue::bias_relu;
        run_case(c);
        if (HasFailure()) return;
      }
    }
  }
}

void cfp8_layouts_biases_and_mixes() {
  struct P {
    DType a;
    int ab;
    DType b;
    int bb;
  };
  const P pairs[] = {{DType::cfp8_e4m3, -1, DType::cfp8_e4m3, -1},
                     {DType::cfp8_e5m2, -1, DType::cfp8_e5m2, -1},
                     {DType::cfp8_e4m3, 3, DType::cfp8_e4m3, 12},
                     {DType::cfp8_e5m2, 9, DType::cfp8_e5m2, 24},
                     {DType::cfp8_e4m3, 0, DType::cfp8_e5m2, 40},
                     {DType::cfp8_e4m3, 10, DType::bf16, -1},
                     {DType::bf16, -1, DType::cfp8_e5m2, 18}};
  for (const P& p : pairs) {
    for (int t = 0; t < 4; ++t) {
      Case c;
      c.M = 50;
      c.N = 67;
      c.K = 99;
      c.ta = t & 1;
      c.tb = t & 2;
      c.at = p.a;
      c.abias = p.ab;
      c.bt = p.b;
      c.bbias = p.bb;
      c.ct = t == 3 ? DType::bf16 : DType::f32;
      run_case(c);
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST_P(GemmRung, Cfp8LayoutsBiasesAndMixes) { cfp8_layouts_biases_and_mixes(); }

// The AVX-512 rungs decode cfp8 while packing with VBMI byte permutes where the CPU has them
// (gemm_pack_cfp8_vbmi.cc) and with 16-bit table permutes otherwise: both give the same
// (exact) operands, so both pass the same tests.
TEST_P(GemmRung, Cfp8WithoutVbmi) {
  GemmTuning t;
  t.cfp8_vbmi = 0;
  tune(t);
  EXPECT_FALSE(gemm_cfp8_vbmi());
  sweep_dims(DType::cfp8_e4m3, DType::cfp8_e5m2, DType::bf16, /*abias=*/4, /*bbias=*/20);
  cfp8_layouts_biases_and_mixes();
  tune({});
  EXPECT_EQ(gemm_cfp8_vbmi(), cpu_features().avx512_vbmi && cpu_features().os_avx512);
}

// Tiny blocks so that the multi-block paths (several K blocks with an f32 workspace for bf16
// output, several MC and NC blocks, odd KC tails) and forced thread grids run on small inputs.
TEST_P(GemmRung, SmallBlockingAndThreadGrids) {
  const GemmTuning tunings[] = {{16, 18, 96, 0, 1}, {8, 7, 48, 0, 2}, {24, 64, 64, 0, 3},
                                {0, 0, 0, 0, 4}};
  for (const GemmTuning& tu : tunings) {
    tune(tu);
    int n = 0;
    for (DType ty : {DType::f32, DType::bf16, DType::cfp8_e4m3}) {
      for (DType ct : {DType::f32, DType::bf16}) {
        for (int t = 0; t < 4; ++t) {
          Case c;
          c.M = 53;
          c.N = 150;
          c.K = 77;
          c.ta = t & 1;
          c.tb = t & 2;
          c.at = c.bt = ty;
          c.ct = ct;
          c.alpha = 1.25f;
          c.beta = (n % 2) ? -0.5f : 0.f;
          c.ep = static_cast<Epilogue>(n % 6);
          ++n;
          run_case(c);
          if (HasFailure()) return;
        }
      }
    }
  }
}

TEST_P(GemmRung, EmptyAndKZero) {
  for (DType ct : {DType::f32, DType::bf16}) {
    for (float beta : {0.f, 0.5f}) {
      for (Epilogue ep : {Epilogue::none, Epilogue::bias_relu, Epilogue::bias_gelu}) {
        Case c;
        c.M = 19;
        c.N = 35;
        c.K = 0;
        c.ct = ct;
        c.beta = beta;
        c.ep = ep;
        run_case(c);
        c.at = c.bt = DType::bf16;
        run_case(c);
      }
    }
  }
  // M or N == 0: nothing is touched, null pointers are fine.
  GemmDesc d;
  d.M = 0;
  d.N = 5;
  d.K = 3;
  EXPECT_NO_THROW(gemm(d, nullptr, nullptr, nullptr));
  d.M = 5;
  d.N = 0;
  EXPECT_NO_THROW(gemm(d, nullptr, nullptr, nullptr));
  d.N = 4;
  d.K = 0;
  std::vector<float> C(20, 1.f);
  d.beta = 2.f;
  gemm(d, nullptr, nullptr, C.data());
  for (float v : C) EXPECT_EQ(v, 2.f);
}

// gelu's erf approximation: K = 1 and B = 1 makes C[i][j] = gelu(A[i]).
TEST_P(GemmRung, GeluMatchesExactErfForm) {
  const int64_t M = 4096, N = 16;
  std::vector<float> a(M), b(N, 1.f), c(M * N);
  for (int64_t i = 0; i < M; ++i) a[i] = -9.f + 18.f * static_cast<float>(i) / (M - 1);
  GemmDesc d;
  d.M = M;
  d.N = N;
  d.K = 1;
  d.epilogue = Epilogue::gelu;
  gemm(d, a.data(), b.data(), c.data());
  double worst = 0;
  for (int64_t i = 0; i < M; ++i) {
    const double x = a[i], want = gelu_exact(x);
    for (int64_t j = 0; j < N; ++j) {
      // 0.5 |x| 1e-6 from erf, a few f32 roundings on top.
      const double err = std::fabs(c[i * N + j] - want);
      worst = std::max(worst, err);
      ASSERT_LE(err, 0.5e-6 * std::fabs(x) + 4e-7 * std::fabs(want) + 1e-9) << "x=" << x;
    }
  }
  RecordProperty("worst_gelu_error", std::to_string(worst));
}

// Without an override, bf16 / cfp8 use vdpbf16ps exactly when it is not much slower than f32
// FMA on this CPU; TESSERA_GEMM_BF16-style forcing works both ways.
TEST(GemmPolicy, AutoPolicyFollowsMeasuredSpeed) {
  if (cpu_isa() < Isa::avx512_bf16 || compiled_isa() < Isa::avx512_bf16) {
    GTEST_SKIP() << "no avx512_bf16";
  }
  ScopedIsaCap cap(Isa::avx512_bf16);
  GemmDesc d;
  d.a_type = d.b_type = DType::bf16;
  const double speedup = gemm_bf16_dot_speedup();
  EXPECT_GT(speedup, 0.0);
  RecordProperty("bf16_dot_speedup", std::to_string(speedup));
  if (std::getenv("TESSERA_GEMM_BF16") == nullptr) {
    EXPECT_STREQ(gemm_impl_name(d), speedup >= kGemmDotMinSpeedup ? "avx512_bf16" : "avx512");
  }
  GemmTuning t;
  t.bf16_dot = 1;
  gemm_set_tuning(t);
  EXPECT_STREQ(gemm_impl_name(d), "avx512_bf16");
  t.bf16_dot = 0;
  gemm_set_tuning(t);
  EXPECT_STREQ(gemm_impl_name(d), "avx512");
  d.a_type = d.b_type = DType::f32;
  t.bf16_dot = 1;  // never applies to f32
  gemm_set_tuning(t);
  EXPECT_STREQ(gemm_impl_name(d), "avx512");
  gemm_set_tuning({});
}

// bf16 / cfp8 operands: a bf16 denormal counts as zero on every vectorized path (vdpbf16ps
// does it in hardware, the FMA path through MXCSR); the scalar reference keeps it. f32 keeps
// IEEE denormals everywhere.
TEST_P(GemmRung, NarrowOperandDenormalsAreZero) {
  const uint16_t a[2] = {0x0001, 0x3f80};  // the smallest bf16 denormal (2^-133), 1
  const uint16_t b[2] = {0x7f00, 0x0000};  // 2^127, 0: denormal x 2^127 = 2^-6, normal
  float c = -1.f;
  GemmDesc d;
  d.M = d.N = 1;
  d.K = 2;
  d.a_type = d.b_type = DType::bf16;
  gemm(d, a, b, &c);
  EXPECT_EQ(c, GetParam() == Isa::scalar ? std::ldexp(1.f, -6) : 0.f);
  const float af[2] = {std::ldexp(1.f, -133), 1.f}, bf[2] = {std::ldexp(1.f, 127), 0.f};
  d.a_type = d.b_type = DType::f32;
  gemm(d, af, bf, &c);
  EXPECT_EQ(c, std::ldexp(1.f, -6));
}

INSTANTIATE_TEST_SUITE_P(AllRungs, GemmRung,
                         ::testing::Values(Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16),
                         rung_name);

// ---- the reference called directly ------------------------------------------------------------

TEST(GemmReference, AgreesWithOracle) {
  for (int t = 0; t < 4; ++t) {
    Case c;
    c.M = 23;
    c.N = 29;
    c.K = 31;
    c.ta = t & 1;
    c.tb = t & 2;
    c.at = t < 2 ? DType::f32 : DType::cfp8_e5m2;
    c.bt = t < 2 ? DType::f32 : DType::bf16;
    c.ct = t == 1 ? DType::bf16 : DType::f32;
    c.beta = 0.5f;
    c.ep = Epilogue::bias_gelu;
    c.use_reference = true;
    run_case(c);
  }
}

// Threads: a problem big enough for the parallel split, with M small (the split must go along
// N) and with N small (along M), in a 1- and a 2-thread arena.
TEST(GemmThreads, SplitShapesAgree) {
  for (int threads : {1, 2}) {
    tbb::task_arena arena(threads);
    arena.execute([&] {
      for (auto s : {std::array<int64_t, 3>{64, 1024, 512}, std::array<int64_t, 3>{1024, 48, 256}}) {
        Case c;
        c.M = s[0];
        c.N = s[1];
        c.K = s[2];
        c.at = c.bt = DType::bf16;
        c.tb = true;
        run_case(c);
      }
    });
  }
}

// ---- bad descriptors ---------------------------------------------------------------------------

template <typename E>
void expect_throw_naming(const GemmDesc& d, const std::string& needle) {
  std::vector<float> buf(1 << 12);
  try {
    gemm(d, buf.data(), buf.data(), buf.data());
    ADD_FAILURE() << "no exception; expected one naming '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not name '" << needle << "'";
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

GemmDesc small() {
  GemmDesc d;
  d.M = 4;
  d.N = 5;
  d.K = 6;
  return d;
}

TEST(GemmValidation, NegativeSizes) {
  GemmDesc d = small();
  d.M = -3;
  expect_throw_naming<ValueError>(d, "M=-3");
  d = small();
  d.N = -1;
  expect_throw_naming<ValueError>(d, "N=-1");
  d = small();
  d.K = -7;
  expect_throw_naming<ValueError>(d, "K=-7");
}

TEST(GemmValidation, LeadingDimensions) {
  GemmDesc d = small();
  d.lda = 5;  // < K = 6
  expect_throw_naming<ValueError>(d, "lda=5");
  d = small();
  d.trans_a = true;
  d.lda = 3;  // < M = 4
  expect_throw_naming<ValueError>(d, "lda=3");
  d = small();
  d.ldb = 4;  // < N = 5
  expect_throw_naming<ValueError>(d, "ldb=4");
  d = small();
  d.trans_b = true;
  d.ldb = 5;  // < K = 6
  expect_throw_naming<ValueError>(d, "ldb=5");
  d = small();
  d.ldc = 2;
  expect_throw_naming<ValueError>(d, "ldc=2");
  d = small();
  d.ldc = -8;
  expect_throw_naming<ValueError>(d, "ldc=-8");
}

TEST(GemmValidation, DtypeCombinations) {
  GemmDesc d = small();
  d.a_type = DType::f32;
  d.b_type = DType::bf16;
  expect_throw_naming<TypeError>(d, "b_type=bf16");
  d.a_type = DType::i32;
  d.b_type = DType::i32;
  expect_throw_naming<TypeError>(d, "a_type=i32");
  d = small();
  d.a_type = DType::cfp8_e4m3;
  d.b_type = DType::f32;
  expect_throw_naming<TypeError>(d, "a_type=cfp8_e4m3");
  d = small();
  d.c_type = DType::cfp8_e4m3;
  expect_throw_naming<TypeError>(d, "c_type=cfp8_e4m3");
  d.c_type = DType::i64;
  expect_throw_naming<TypeError>(d, "c_type=i64");
  d = small();
  d.a_type = static_cast<DType>(77);
  expect_throw_naming<TypeError>(d, "77");
}

TEST(GemmValidation, Cfp8Bias) {
  GemmDesc d = small();
  d.a_type = d.b_type = DType::cfp8_e4m3;
  d.a_bias = 64;
  expect_throw_naming<ValueError>(d, "a_bias=64");
  d.a_bias = 7;
  d.b_bias = -2;
  expect_throw_naming<ValueError>(d, "b_bias=-2");
  d.b_bias = 63;
  EXPECT_NO_THROW(gemm_validate(d));
  d.b_bias = 0;
  EXPECT_NO_THROW(gemm_validate(d));
}

TEST(GemmValidation, BiasEpilogueNeedsBias) {
  for (Epilogue e : {Epilogue::bias, Epilogue::bias_relu, Epilogue::bias_gelu}) {
    GemmDesc d = small();
    d.epilogue = e;
    expect_throw_naming<ValueError>(d, epilogue_name(e));
  }
  GemmDesc d = small();
  d.epilogue = static_cast<Epilogue>(42);
  expect_throw_naming<ValueError>(d, "42");
}

TEST(GemmValidation, NullPointers) {
  GemmDesc d = small();
  std::vector<float> buf(64);
  EXPECT_THROW(gemm(d, nullptr, buf.data(), buf.data()), ValueError);
  EXPECT_THROW(gemm(d, buf.data(), nullptr, buf.data()), ValueError);
  EXPECT_THROW(gemm(d, buf.data(), buf.data(), nullptr), ValueError);
}

}  // namespace
}  // namespace tessera::kernels
