// cfp8: Tesla's configurable 8-bit float. Scalar reference conversions (the oracle for the
// vectorized ones in kernels/convert.h).
//
//   Cfp8Format fmt{Cfp8Layout::e4m3, 7};
//   uint8_t c = cfp8_encode(3.3f, fmt);          // round to nearest, ties to even
//   float v = cfp8_decode(c, fmt);               // 3.25
//   uint8_t s = cfp8_encode_stochastic(3.3f, fmt, cfp8_sr_bits(key, i));
//
// Format (DESIGN §3): sign, then E exponent bits and M mantissa bits: e4m3 = 1-4-3, e5m2 = 1-5-2.
// The exponent bias (0..63) is tensor metadata, not part of the code. There are no Inf or NaN
// codes: every exponent code e >= 1 is a normal number (-1)^s 2^(e-bias) (1 + m/2^M);
// e == 0 is subnormal, (-1)^s 2^(1-bias) (m/2^M). Out-of-range values, and +-Inf, saturate to
// +-max. A NaN input encodes to kCfp8NanCode (+0) and increments cfp8_invalid_count().
// Zero keeps its sign (0x80 is -0). Every cfp8 value is exactly representable in bf16.
#pragma once

#include <tessera/core/bf16.h>
#include <tessera/core/error.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>

namespace tessera {

enum class Cfp8Layout : uint8_t { e4m3 = 0, e5m2 = 1 };

inline constexpr int kCfp8MaxBias = 63;
inline constexpr int kCfp8DefaultBiasE4M3 = 7;   // max 480, as DESIGN §3
inline constexpr int kCfp8DefaultBiasE5M2 = 15;  // max 114688
// What a NaN input encodes to. cfp8 has no NaN; +0 keeps a poisoned value from blowing up the
// step, and the Invalid counter (checked by the loss scaler) is how NaNs are noticed.
inline constexpr uint8_t kCfp8NanCode = 0x00;

enum class Rounding : uint8_t { nearest_even = 0, stochastic = 1 };

inline const char* cfp8_layout_name(Cfp8Layout l) { return l == Cfp8Layout::e4m3 ? "e4m3" : "e5m2"; }
inline int cfp8_mant_bits(Cfp8Layout l) { return l == Cfp8Layout::e4m3 ? 3 : 2; }
inline int cfp8_exp_bits(Cfp8Layout l) { return l == Cfp8Layout::e4m3 ? 4 : 5; }
inline int cfp8_default_bias(Cfp8Layout l) {
  return l == Cfp8Layout::e4m3 ? kCfp8DefaultBiasE4M3 : kCfp8DefaultBiasE5M2;
}

inline void check_cfp8_bias(int bias) {
  TESSERA_CHECK(bias >= 0 && bias <= kCfp8MaxBias, "cfp8 exponent bias ", bias,
                " is out of range 0..", kCfp8MaxBias);
}

struct Cfp8Format {
  Cfp8Layout layout = Cfp8Layout::e4m3;
  int bias = kCfp8DefaultBiasE4M3;
  int mant_bits() const { return cfp8_mant_bits(layout); }
  int exp_bits() const { return cfp8_exp_bits(layout); }
};

// 2^k as a float, for k in [-126, 127] (all cfp8 scale factors are).
inline float exp2i(int k) { return f32_from_bits(static_cast<uint32_t>(k + 127) << 23); }

inline float cfp8_max(Cfp8Format f) {
  int M = f.mant_bits();
  int emax = (1 << f.exp_bits()) - 1;
  return static_cast<float>((2 << M) - 1) * exp2i(emax - f.bias - M);
}
// Smallest positive (subnormal) value.
inline float cfp8_min_subnormal(Cfp8Format f) { return exp2i(1 - f.bias - f.mant_bits()); }

// Count of NaN inputs seen by any cfp8 encoder (scalar or vectorized) in this process.
inline std::atomic<uint64_t>& cfp8_invalid_counter() {
  static std::atomic<uint64_t> counter{0};
  return counter;
}
inline uint64_t cfp8_invalid_count() { return cfp8_invalid_counter().load(); }

inline float cfp8_decode(uint8_t code, Cfp8Format f) {
  int M = f.mant_bits();
  int e = (code & 0x7f) >> M;
  int m = code & ((1 << M) - 1);
  int v = e ? (m | (1 << M)) : m;
  float r = static_cast<float>(v) * exp2i(std::max(e, 1) - f.bias - M);
  return (code & 0x80) ? -r : r;
}

namespace detail {
// Shared by both roundings: the exponent code floor (e >= 1 covers subnormals, whose scale is
// that of e == 1) and the mantissa-aligned magnitude q = |x| 2^(M - (e - bias)), exact.
struct Cfp8Split {
  int e;
  float q;
};
inline Cfp8Split cfp8_split(uint32_t abs_bits, Cfp8Format f) {
  int M = f.mant_bits();
  int E = static_cast<int>(abs_bits >> 23) - 127;  // f32 denormals: -127, they round to 0
  int e = std::max(E + f.bias, 1);
  float q = f32_from_bits(abs_bits) * exp2i(M - (e - f.bias));
  return {e, std::min(q, 64.0f)};  // only Inf exceeds 2^(M+1); clamp keeps int math defined
}
inline uint8_t cfp8_assemble(uint32_t sign, int e, int r, int M) {
  int code = std::min(((e - 1) << M) + r, 127);  // carries into the exponent; saturates
  return static_cast<uint8_t>(sign | static_cast<uint32_t>(code));
}
}  // namespace detail

inline uint8_t cfp8_encode(float x, Cfp8Format f) {
  uint32_t u = f32_bits(x);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) {
    cfp8_invalid_counter().fetch_add(1, std::memory_order_relaxed);
    return kCfp8NanCode;
  }
  auto s = detail::cfp8_split(a, f);
  int r = static_cast<int>(std::nearbyint(s.q));  // default FP environment: ties to even
  return detail::cfp8_assemble((u >> 24) & 0x80u, s.e, r, f.mant_bits());
}

// Stochastic rounding: rounds |x| up with probability equal to its distance past the lower
// neighbour, using 23 bits of `random`. Exactly representable values are never moved.
// Bias is below 2^-23 of a step (fraction bits below that are truncated).
inline uint8_t cfp8_encode_stochastic(float x, Cfp8Format f, uint32_t random) {
  uint32_t u = f32_bits(x);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) {
    cfp8_invalid_counter().fetch_add(1, std::memory_order_relaxed);
    return kCfp8NanCode;
  }
  auto s = detail::cfp8_split(a, f);
  uint32_t fixed = static_cast<uint32_t>(s.q * 8388608.0f);  // q in 9.23 fixed point
  int r = static_cast<int>((fixed + (random & 0x7fffffu)) >> 23);
  return detail::cfp8_assemble((u >> 24) & 0x80u, s.e, r, f.mant_bits());
}

// Counter-based random bits for stochastic rounding: element i of a stream keyed by a seed.
// Pure function of (key, i), so scalar, vectorized and parallel encoders agree bit for bit.
inline uint32_t cfp8_sr_key(uint64_t seed, uint64_t offset_hi) {
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (offset_hi + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}
inline uint32_t cfp8_sr_bits(uint32_t key, uint32_t i) {
  uint32_t x = (i * 0x9e3779b9u) ^ key;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

}  // namespace tessera
