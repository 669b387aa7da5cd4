// AVX-512 (F, BW, VL, DQ) conversions, 16 lanes. Same arithmetic as core/cfp8.h step by step
// (scale by a power of two, round, assemble, saturate), so results match bit for bit. Tails
// shorter than a vector go through the scalar reference.
#include <tessera/kernels/convert.h>
#include <tessera/kernels/round_avx512.h>

#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>

#include <immintrin.h>
#include <cstring>
#include <cmath>

#include <limits>

namespace tessera::kernels {
namespace {

void f32_to_bf16_512(const float* s, uint16_t* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i r = _mm512_srli_epi32(_mm512_castps_si512(round_bf16_ps(_mm512_loadu_ps(s + i))), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), _mm512_cvtepi32_epi16(r));
  }
  convert_fns_scalar()->f32_to_bf16(s + i, d + i, n - i);
}

void bf16_to_f32_512(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i)));
    _mm512_storeu_ps(d + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
  convert_fns_scalar()->bf16_to_f32(s + i, d + i, n - i);
}

// Magnitude split of cfp8_split(): e (exponent code floor 1) and q (mantissa-aligned, exact).
struct Split512 {
  __m512i e;
  __m512 q;
};
inline Split512 split(__m512i abs, int M, int bias) {
  __m512i E = _mm512_sub_epi32(_mm512_srli_epi32(abs, 23), _mm512_set1_epi32(127));
  __m512i e = _mm512_max_epi32(_mm512_add_epi32(E, _mm512_set1_epi32(bias)), _mm512_set1_epi32(1));
  // scale = 2^(M - (e - bias)), built from its exponent bits.
  __m512i k = _mm512_sub_epi32(_mm512_set1_epi32(M + bias + 127), e);
  __m512 scale = _mm512_castsi512_ps(_mm512_slli_epi32(k, 23));
  __m512 q = _mm512_min_ps(_mm512_mul_ps(_mm512_castsi512_ps(abs), scale), _mm512_set1_ps(64.0f));
  return {e, q};
}
inline __m512i assemble32(__m512i u, __m512i e, __m512i r, int M, __mmask16 nan);
inline __m128i assemble(__m512i u, __m512i e, __m512i r, int M, __mmask16 nan) {
  return _mm512_cvtepi32_epi8(assemble32(u, e, r, M, nan));
}
inline __m512i assemble32(__m512i u, __m512i e, __m512i r, int M, __mmask16 nan) {
  __m512i code = _mm512_add_epi32(_mm512_sllv_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(1)),
                                                    _mm512_set1_epi32(M)), r);
  code = _mm512_min_epi32(code, _mm512_set1_epi32(127));
  __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));
  code = _mm512_or_si512(code, sign);
  return _mm512_mask_mov_epi32(code, nan, _mm512_set1_epi32(kCfp8NanCode));
}

size_t f32_to_cfp8_rne_512(const float* s, uint8_t* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t nans = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i u = _mm512_castps_si512(_mm512_loadu_ps(s + i));
    __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    nans += __builtin_popcount(nan);
    Split512 sp = split(abs, M, f.bias);
    __m512i r = _mm512_cvt_roundps_epi32(sp.q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), assemble(u, sp.e, r, M, nan));
  }
  return nans + convert_fns_scalar()->f32_to_cfp8_rne(s + i, d + i, n - i, f);
}

inline __m512i sr_bits(__m512i idx, __m512i key) {
  __m512i x = _mm512_xor_si512(_mm512_mullo_epi32(idx, _mm512_set1_epi32(0x9e3779b9u)), key);
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x846ca68bu));
  return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

size_t f32_to_cfp8_sr_512(const float* s, uint8_t* d, size_t n, Cfp8Format f, uint32_t key,
                          uint32_t index0) {
  const int M = f.mant_bits();
  const __m512i vkey = _mm512_set1_epi32(static_cast<int>(key));
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  size_t nans = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i u = _mm512_castps_si512(_mm512_loadu_ps(s + i));
    __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    nans += __builtin_popcount(nan);
    Split512 sp = split(abs, M, f.bias);
    __m512i fixed = _mm512_cvttps_epi32(_mm512_mul_ps(sp.q, _mm512_set1_ps(8388608.0f)));
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(index0 + i)), iota);
    __m512i rnd = _mm512_and_si512(sr_bits(idx, vkey), _mm512_set1_epi32(0x7fffff));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(fixed, rnd), 23);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i), assemble(u, sp.e, r, M, nan));
  }
  return nans + convert_fns_scalar()->f32_to_cfp8_sr(s + i, d + i, n - i, f, key,
                                                     index0 + static_cast<uint32_t>(i));
}

// Decoded f32 bit patterns of 16 codes.
inline __m512i decode_bits32(__m512i c, int M, int bias) {
  __m512i e = _mm512_srli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x7f)), M);
  __m512i m = _mm512_and_si512(c, _mm512_set1_epi32((1 << M) - 1));
  __m512i one = _mm512_set1_epi32(1);
  __m512i e1 = _mm512_max_epi32(e, one);
  __m512i v = _mm512_or_si512(m, _mm512_slli_epi32(_mm512_min_epi32(e, one), M));
  __m512i k = _mm512_add_epi32(e1, _mm512_set1_epi32(127 - bias - M));
  __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_castsi512_ps(_mm512_slli_epi32(k, 23)));
  __m512i sign = _mm512_slli_epi32(_mm512_and_si512(c, _mm512_set1_epi32(0x80)), 24);
  return _mm512_or_si512(_mm512_castps_si512(r), sign);
}
inline __m512i decode_bits(__m128i codes, int M, int bias) { return decode_bits32(_mm512_cvtepu8_epi32(codes), M, bias); }

void cfp8_to_f32_512(const uint8_t* s, float* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i b = decode_bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)), M, f.bias);
    _mm512_storeu_ps(d + i, _mm512_castsi512_ps(b));
  }
  convert_fns_scalar()->cfp8_to_f32(s + i, d + i, n - i, f);
}

void cfp8_to_bf16_512(const uint8_t* s, uint16_t* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i b = decode_bits(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)), M, f.bias);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(b, 16)));
  }
  convert_fns_scalar()->cfp8_to_bf16(s + i, d + i, n - i, f);
}

}  // namespace

// f32 -> f32 holding the nearest bf16 / cfp8 value, in one pass (convert.h f32_round_to).
void f32_round_bf16_avx512(const float* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, round_bf16_ps(_mm512_loadu_ps(s + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(d + i, m, round_bf16_ps(_mm512_maskz_loadu_ps(m, s + i)));
  }
}

namespace {
// Runs step(mask, i) over n elements 16 at a time, the tail masked (short rows, such as a padded
// image row of 28 floats, stay vectorized).
template <typename F>
inline void for_each_16(size_t n, F&& step) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) step(__mmask16(0xffff), i);
  if (i < n) step(static_cast<__mmask16>((1u << (n - i)) - 1), i);
}

// Per-lane NaN counts and max |x| (as bits: NaN bits beat every number) over such a loop. The
// output may overwrite the input, so NaNs are counted as they pass, not recounted afterwards.
struct AmaxNans512 {
  __m512i max_bits = _mm512_setzero_si512(), nans = _mm512_setzero_si512();
  void add(__m512i abs_bits, __mmask16 nan) {
    max_bits = _mm512_max_epu32(max_bits, abs_bits);  // masked-off lanes are loaded as +0
    nans = _mm512_mask_add_epi32(nans, nan, nans, _mm512_set1_epi32(1));
  }
  // The reductions run once per call, through memory: GCC 12's _mm512_reduce_* intrinsics trip
  // -Wuninitialized in its own header.
  size_t nan_count() const {
    alignas(64) uint32_t lanes[16];
    _mm512_store_si512(lanes, nans);
    size_t c = 0;
    for (uint32_t v : lanes) c += v;
    return c;
  }
  float amax() const {
    alignas(64) uint32_t lanes[16];
    _mm512_store_si512(lanes, max_bits);
    uint32_t bits = 0;
    for (uint32_t b : lanes) bits = b > bits ? b : bits;
    if (bits > 0x7f800000u) return std::numeric_limits<float>::quiet_NaN();
    float a;
    std::memcpy(&a, &bits, sizeof a);
    return a;
  }
};
}  // namespace

// f32_to_cfp8_rne_512 that also returns max |x| (NaN if any x is NaN) from the same loop: the
// precision policy's one-pass encode. Returns the number of NaN inputs.
size_t f32_to_cfp8_rne_amax_avx512(const float* s, uint8_t* d, size_t n, Cfp8Format f, float* amax) {
  const int M = f.mant_bits();
  AmaxNans512 acc;
  for_each_16(n, [&](__mmask16 k, size_t i) {
    const __m512i u = _mm512_castps_si512(_mm512_maskz_loadu_ps(k, s + i));
    const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    acc.add(abs, nan);
    const Split512 sp = split(abs, M, f.bias);
    const __m512i r = _mm512_cvt_roundps_epi32(sp.q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_mask_storeu_epi8(d + i, k, assemble(u, sp.e, r, M, nan));
  });
  *amax = acc.amax();
  return acc.nan_count();
}

size_t f32_round_cfp8_avx512(const float* s, float* d, size_t n, Cfp8Format f) {
  const Cfp8Round512 round(f);
  AmaxNans512 acc;
  for_each_16(n, [&](__mmask16 k, size_t i) {
    __m512i au;
    __mmask16 nan;
    _mm512_mask_storeu_ps(d + i, k, round.round(_mm512_maskz_loadu_ps(k, s + i), au, nan));
    acc.add(au, nan);
  });
  return acc.nan_count();
}

// f32 -> bf16 bits of the nearest cfp8 value (exact: the rounded f32 has 16 zero low bits), and
// max |x| with NaN reported through the return of *amax. Returns the number of NaN inputs.
size_t f32_round_cfp8_bf16_avx512(const float* s, uint16_t* d, size_t n, Cfp8Format f, float* amax) {
  const Cfp8Round512 round(f);
  AmaxNans512 acc;
  for_each_16(n, [&](__mmask16 k, size_t i) {
    __m512i au;
    __mmask16 nan;
    const __m512i r = _mm512_castps_si512(round.round(_mm512_maskz_loadu_ps(k, s + i), au, nan));
    acc.add(au, nan);
    _mm256_mask_storeu_epi16(d + i, k, _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
  });
  *amax = acc.amax();
  return acc.nan_count();
}

namespace {

const ConvertFns k512 = {f32_to_bf16_512,    bf16_to_f32_512, f32_to_cfp8_rne_512,
                         f32_to_cfp8_sr_512, cfp8_to_f32_512, cfp8_to_bf16_512};
}  // namespace

const ConvertFns* convert_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
