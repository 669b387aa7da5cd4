// bf16 scalar reference conversions (the oracle for the vectorized ones in kernels/).
//
//   uint16_t b = f32_to_bf16(1.0f / 3);   // round to nearest, ties to even
//   float f = bf16_to_f32(b);             // exact
//
// Narrowing rounds to nearest-even on the bit pattern, which is also correct for f32
// denormals; overflow becomes Inf as IEEE rounding requires; a NaN stays NaN and becomes quiet
// (its top payload bits are kept). Widening is exact.
#pragma once

#include <cstdint>
#include <cstring>

namespace tessera {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float f32_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float bf16_to_f32(uint16_t b) { return f32_from_bits(static_cast<uint32_t>(b) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep sign and payload top, force quiet
    return static_cast<uint16_t>((u >> 16) | 0x0040u);
  }
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline bool bf16_is_nan(uint16_t b) { return (b & 0x7fffu) > 0x7f80u; }

// Round-trip through bf16: the f32 value nearest-even representable in bf16.
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

}  // namespace tessera
