// Counter-based random numbers: element i of a stream is a pure function of (seed, i), so
// fills are reproducible across runs, thread counts and platforms (std:: distributions are not).
#pragma once

#include <cmath>
#include <cstdint>

namespace tessera {

inline uint64_t splitmix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
inline uint64_t random_bits(uint64_t seed, uint64_t i) { return splitmix64(splitmix64(seed) ^ i); }
// Uniform in [0, 1) with 53 random bits.
inline double random_uniform(uint64_t seed, uint64_t i) {
  return static_cast<double>(random_bits(seed, i) >> 11) * 0x1.0p-53;
}
// Standard normal (Box-Muller on two uniforms of the stream).
inline double random_normal(uint64_t seed, uint64_t i) {
  double u1 = 1.0 - random_uniform(seed, 2 * i);  // (0, 1]: log is finite
  double u2 = random_uniform(seed, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

}  // namespace tessera
