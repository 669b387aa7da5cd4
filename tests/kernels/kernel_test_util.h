// Shared helpers for the kernel tests: one parameterized fixture per ISA rung, seeded inputs,
// and comparison against double-precision references with a count of wrong elements.
#pragma once

#include <tessera/kernels/cpu.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::kernels::testing {

inline const size_t kLengths[] = {0, 1, 7, 15, 16, 17, 33, 1000, 100003};

// Runs each test with the ISA capped at GetParam(); skips rungs this CPU or build lacks.
class RungTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (GetParam() > cpu_isa()) GTEST_SKIP() << "CPU lacks " << isa_name(GetParam());
    if (GetParam() > compiled_isa()) GTEST_SKIP() << isa_name(GetParam()) << " not compiled in";
    cap_ = std::make_unique<ScopedIsaCap>(GetParam());
  }
  // The table dispatch must pick at this rung (no op needs avx512_bf16 instructions).
  template <typename T>
  const T* expected(const T* scalar, const T* avx2, const T* avx512) const {
    return GetParam() >= Isa::avx512 ? avx512 : GetParam() == Isa::avx2 ? avx2 : scalar;
  }
  std::unique_ptr<ScopedIsaCap> cap_;
};

inline std::string rung_name(const ::testing::TestParamInfo<Isa>& info) { return isa_name(info.param); }

#define TESSERA_INSTANTIATE_RUNGS(Fixture)                                             \
  INSTANTIATE_TEST_SUITE_P(AllRungs, Fixture, ::testing::ValuesIn(::tessera::kernels::kAllIsas), \
                           ::tessera::kernels::testing::rung_name)

// Deterministic pseudo-random numbers (PCG-style LCG, top bits).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint32_t next() {
    s_ = s_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<uint32_t>(s_ >> 32);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * (next() / 4294967296.0); }
  int below(int n) { return static_cast<int>(next() % static_cast<uint32_t>(n)); }

 private:
  uint64_t s_;
};

inline std::vector<float> uniform(size_t n, double lo, double hi, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// Multiples of 1/denom in [-k/denom, k/denom]: sums of these are exact in f32 while small.
inline std::vector<float> dyadic(size_t n, int k, int denom, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.below(2 * k + 1) - k) / static_cast<float>(denom);
  return v;
}

// |got[i] - want[i]| <= rtol * max(|want[i]|, scale[i]) + atol for every i (scale optional:
// the magnitude of the terms that produced want[i], for results with cancellation).
inline ::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<double>& want,
                                            double rtol, double atol,
                                            const std::vector<double>& scale = {}) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  }
  size_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < got.size(); ++i) {
    double mag = std::fabs(want[i]);
    if (!scale.empty()) mag = std::max(mag, scale[i]);
    double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    bool ok = std::isnan(want[i]) ? std::isnan(got[i])
              : std::isinf(want[i]) ? static_cast<double>(got[i]) == want[i]
                                    : err <= rtol * mag + atol;
    if (!ok) {
      if (bad < 5) first << "\n  [" << i << "] got " << got[i] << " want " << want[i] << " (err " << err << ")";
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << got.size() << " elements wrong:" << first.str();
}

// Bit-for-bit equality of two float arrays (NaN payloads included); empty arrays are equal.
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), 4 * a.size()) == 0);
}

inline ::testing::AssertionResult scalar_close(double got, double want, double rtol, double atol) {
  return all_close({static_cast<float>(got)}, {want}, rtol, atol);
}

}  // namespace tessera::kernels::testing
