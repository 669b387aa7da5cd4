// AVX-512 (F, BW, VL) packing for the avx512 and avx512_bf16 GEMM rungs: produces exactly the
// layout of gemm_pack_generic_{f32,bf16} (gemm_driver.h), 16 lanes of 32-bit "words" at a time.
// A word is one f32 (kpack 1) or one bf16 k-pair (kpack 2). cfp8 is decoded to bf16 here,
// while packing, with a 128-entry table held in four registers (vpermt2w, or vpermt2b where the
// CPU has AVX512_VBMI: gemm_pack_cfp8_vbmi.cc), so no full-size converted copy of an operand
// ever exists. Include only from AVX-512 sources.
//
// Two source orientations:
//   x-contiguous (sx == 1: A transposed, B plain): per k step, load 16 x of one (or two) k rows
//     and interleave the pair: a copy.
//   k-contiguous (sk == 1: A plain, B transposed): per 16 x, load 16 words along k of each
//     row and transpose the 16 x 16 word block in registers.
#pragma once

#include <tessera/kernels/gemm_driver.h>

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace tessera::kernels {
namespace {

enum class GemmSrc { f32, bf16, cfp8 };

inline __mmask32 gemm_mask32(int64_t n) {
  return n >= 32 ? ~__mmask32(0) : static_cast<__mmask32>((1u << std::max<int64_t>(n, 0)) - 1);
}
inline __mmask16 gemm_mask16(int64_t n) {
  return n >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << std::max<int64_t>(n, 0)) - 1);
}

template <GemmSrc S>
inline constexpr int kSrcBytes = S == GemmSrc::f32 ? 4 : S == GemmSrc::bf16 ? 2 : 1;

struct GemmPackSrc {
  const char* base;
  int64_t sx, sk;
  // cfp8 decode tables for codes 0..127 (the sign is bit 7): bf16 bits in 16-bit lanes, or,
  // with AVX512_VBMI, low bytes in lut[0..1] and high bytes in lut[2..3].
  __m512i lut[4];
};

#if defined(__AVX512VBMI__)
// With VBMI (compiled into gemm_pack_cfp8_vbmi.cc only): a 128-entry byte table is one
// vpermt2b, 64 lanes a step, so a cfp8 code becomes the two bytes of its bf16 in two table
// lookups and one or two byte permutes interleave them into bf16 or f32 lanes: about a third
// of the shuffle work of the 16-bit table below.
inline void gemm_cfp8_lut_setup(GemmPackSrc& s, const uint16_t* table) {
  for (int i = 0; i < 2; ++i) {
    const __m512i w0 = _mm512_loadu_si512(table + 64 * i), w1 = _mm512_loadu_si512(table + 64 * i + 32);
    const __m256i lo0 = _mm512_cvtepi16_epi8(w0), lo1 = _mm512_cvtepi16_epi8(w1);
    const __m256i hi0 = _mm512_cvtepi16_epi8(_mm512_srli_epi16(w0, 8));
    const __m256i hi1 = _mm512_cvtepi16_epi8(_mm512_srli_epi16(w1, 8));
    s.lut[i] = _mm512_inserti64x4(_mm512_castsi256_si512(lo0), lo1, 1);
    s.lut[2 + i] = _mm512_inserti64x4(_mm512_castsi256_si512(hi0), hi1, 1);
  }
}

// Low and high bytes of the bf16 of each of up to 64 codes (byte lanes).
inline void gemm_cfp8_decode_bytes(__m512i c, const __m512i (&lut)[4], __m512i& lo, __m512i& hi) {
  lo = _mm512_permutex2var_epi8(lut[0], c, lut[1]);  // the index's bit 7 (sign) is ignored
  hi = _mm512_permutex2var_epi8(lut[2], c, lut[3]);
  hi = _mm512_ternarylogic_epi32(hi, c, _mm512_set1_epi8(static_cast<char>(0x80)), 0xf8);  // hi | (c & 0x80)
}

// Byte-permute indices: f32 lanes of codes 16q..16q+15 (bytes 4j+2, 4j+3 from lo[16q+j],
// hi[16q+j]; the two low bytes are zeroed by the mask), and bf16 lanes of codes 32h..32h+31.
struct GemmCfp8Index {
  alignas(64) uint8_t f32[4][64];
  alignas(64) uint8_t bf16[2][64];
};
constexpr GemmCfp8Index gemm_make_cfp8_index() {
  GemmCfp8Index t{};
  for (int q = 0; q < 4; ++q) {
    for (int j = 0; j < 16; ++j) {
      t.f32[q][4 * j + 2] = static_cast<uint8_t>(16 * q + j);
      t.f32[q][4 * j + 3] = static_cast<uint8_t>(64 + 16 * q + j);
    }
  }
  for (int h = 0; h < 2; ++h) {
    for (int j = 0; j < 32; ++j) {
      t.bf16[h][2 * j] = static_cast<uint8_t>(32 * h + j);
      t.bf16[h][2 * j + 1] = static_cast<uint8_t>(64 + 32 * h + j);
    }
  }
  return t;
}
inline constexpr GemmCfp8Index kGemmCfp8Index = gemm_make_cfp8_index();
inline __m512i gemm_cfp8_f32_index(int q) { return _mm512_load_si512(kGemmCfp8Index.f32[q]); }
inline __m512i gemm_cfp8_bf16_index() { return _mm512_load_si512(kGemmCfp8Index.bf16[0]); }
inline constexpr __mmask64 kGemmHighHalves = 0xccccccccccccccccull;

inline __m512i gemm_cfp8_load_bytes(const GemmPackSrc& s, int64_t off, int64_t count) {
  const __mmask64 m = count >= 64 ? ~__mmask64(0) : (__mmask64(1) << std::max<int64_t>(count, 0)) - 1;
  return _mm512_maskz_loadu_epi8(m, s.base + off);
}

// `count` (clamped to 0..32) consecutive elements at element offset `off`, as bf16; zeros after.
template <GemmSrc S>
inline __m512i gemm_load_bf16x32(const GemmPackSrc& s, int64_t off, int64_t count) {
  if constexpr (S == GemmSrc::bf16) {
    return _mm512_maskz_loadu_epi16(gemm_mask32(count), reinterpret_cast<const uint16_t*>(s.base) + off);
  } else {
    __m512i lo, hi;
    gemm_cfp8_decode_bytes(gemm_cfp8_load_bytes(s, off, std::min<int64_t>(count, 32)), s.lut, lo, hi);
    return _mm512_permutex2var_epi8(lo, gemm_cfp8_bf16_index(), hi);
  }
}
template <GemmSrc S>
inline __m256i gemm_load_bf16x16(const GemmPackSrc& s, int64_t off, int64_t count) {
  return _mm512_castsi512_si256(gemm_load_bf16x32<S>(s, off, std::min<int64_t>(count, 16)));
}
template <GemmSrc S>
inline __m512i gemm_load_f32x16(const GemmPackSrc& s, int64_t off, int64_t count) {
  if constexpr (S == GemmSrc::f32) {
    return _mm512_castps_si512(_mm512_maskz_loadu_ps(gemm_mask16(count), reinterpret_cast<const float*>(s.base) + off));
  } else if constexpr (S == GemmSrc::bf16) {
    return _mm512_slli_epi32(_mm512_cvtepu16_epi32(gemm_load_bf16x16<S>(s, off, count)), 16);
  } else {
    __m512i lo, hi;
    gemm_cfp8_decode_bytes(gemm_cfp8_load_bytes(s, off, std::min<int64_t>(count, 16)), s.lut, lo, hi);
    return _mm512_maskz_permutex2var_epi8(kGemmHighHalves, lo, gemm_cfp8_f32_index(0), hi);
  }
}

// `count` (clamped to 0..16 N) consecutive cfp8 elements as N (<= 4) vectors of 16 f32 (zeros
// after), stored 16 words apart from `dst`: one decode for all of them.
template <int N>
inline void gemm_store_cfp8_f32(const GemmPackSrc& s, int64_t off, int64_t count, uint32_t* dst) {
  __m512i lo, hi;
  gemm_cfp8_decode_bytes(gemm_cfp8_load_bytes(s, off, std::min<int64_t>(count, 16 * N)), s.lut, lo, hi);
#pragma GCC unroll 4
  for (int q = 0; q < N; ++q) {
    _mm512_storeu_si512(dst + 16 * q, _mm512_maskz_permutex2var_epi8(kGemmHighHalves, lo, gemm_cfp8_f32_index(q), hi));
  }
}
inline void gemm_load_cfp8_f32x32(const GemmPackSrc& s, int64_t off, int64_t count, __m512i& lo32, __m512i& hi32) {
  __m512i lo, hi;
  gemm_cfp8_decode_bytes(gemm_cfp8_load_bytes(s, off, std::min<int64_t>(count, 32)), s.lut, lo, hi);
  lo32 = _mm512_maskz_permutex2var_epi8(kGemmHighHalves, lo, gemm_cfp8_f32_index(0), hi);
  hi32 = _mm512_maskz_permutex2var_epi8(kGemmHighHalves, lo, gemm_cfp8_f32_index(1), hi);
}
inline constexpr int kGemmCfp8F32PerDecode = 64;
#else
inline void gemm_cfp8_lut_setup(GemmPackSrc& s, const uint16_t* table) {
  for (int i = 0; i < 4; ++i) s.lut[i] = _mm512_loadu_si512(table + 32 * i);
}

// 32 cfp8 codes (zero-extended to 16-bit lanes) -> 32 bf16.
inline __m512i gemm_cfp8_decode32(__m512i c, const __m512i (&lut)[4]) {
  const __m512i lo = _mm512_permutex2var_epi16(lut[0], c, lut[1]);  // codes & 0x3f, bit 6 clear
  const __m512i hi = _mm512_permutex2var_epi16(lut[2], c, lut[3]);  // bit 6 set
  const __mmask32 upper = _mm512_test_epi16_mask(c, _mm512_set1_epi16(0x40));
  const __m512i mag = _mm512_mask_blend_epi16(upper, lo, hi);
  const __m512i sign = _mm512_slli_epi16(_mm512_and_si512(c, _mm512_set1_epi16(0x80)), 8);
  return _mm512_or_si512(mag, sign);
}

// `count` (clamped to 0..32) consecutive elements at element offset `off`, as bf16; zeros after.
template <GemmSrc S>
inline __m512i gemm_load_bf16x32(const GemmPackSrc& s, int64_t off, int64_t count) {
  if constexpr (S == GemmSrc::bf16) {
    return _mm512_maskz_loadu_epi16(gemm_mask32(count), reinterpret_cast<const uint16_t*>(s.base) + off);
  } else {
    const __m256i bytes = _mm256_maskz_loadu_epi8(gemm_mask32(count), s.base + off);
    return gemm_cfp8_decode32(_mm512_cvtepu8_epi16(bytes), s.lut);
  }
}
template <GemmSrc S>
inline __m256i gemm_load_bf16x16(const GemmPackSrc& s, int64_t off, int64_t count) {
  if constexpr (S == GemmSrc::bf16) {
    return _mm256_maskz_loadu_epi16(gemm_mask16(count), reinterpret_cast<const uint16_t*>(s.base) + off);
  } else {
    const __m128i bytes = _mm_maskz_loadu_epi8(gemm_mask16(count), s.base + off);
    return _mm512_castsi512_si256(gemm_cfp8_decode32(_mm512_cvtepu8_epi16(_mm256_zextsi128_si256(bytes)), s.lut));
  }
}
template <GemmSrc S>
inline __m512i gemm_load_f32x16(const GemmPackSrc& s, int64_t off, int64_t count) {
  if constexpr (S == GemmSrc::f32) {
    return _mm512_castps_si512(_mm512_maskz_loadu_ps(gemm_mask16(count), reinterpret_cast<const float*>(s.base) + off));
  } else {
    return _mm512_slli_epi32(_mm512_cvtepu16_epi32(gemm_load_bf16x16<S>(s, off, count)), 16);
  }
}

// `count` (clamped to 0..32) consecutive cfp8 elements as two vectors of 16 f32 (zeros after):
// one 32-lane table decode for both, where two gemm_load_f32x16 calls would decode 32 lanes
// each and use 16.
inline void gemm_load_cfp8_f32x32(const GemmPackSrc& s, int64_t off, int64_t count, __m512i& lo, __m512i& hi) {
  const __m512i b = gemm_load_bf16x32<GemmSrc::cfp8>(s, off, count);
  lo = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(b)), 16);
  hi = _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(b, 1)), 16);
}
// `count` (clamped to 0..16 N) consecutive cfp8 elements as N vectors of 16 f32 (zeros after),
// stored 16 words apart from `dst`, two per decode.
template <int N>
inline void gemm_store_cfp8_f32(const GemmPackSrc& s, int64_t off, int64_t count, uint32_t* dst) {
#pragma GCC unroll 2
  for (int q = 0; q < N; q += 2) {
    __m512i lo, hi;
    gemm_load_cfp8_f32x32(s, off + 16 * q, std::min<int64_t>(count - 16 * q, 16 * (N - q)), lo, hi);
    _mm512_storeu_si512(dst + 16 * q, lo);
    if (q + 1 < N) _mm512_storeu_si512(dst + 16 * q + 16, hi);
  }
}
inline constexpr int kGemmCfp8F32PerDecode = 32;
#endif

// 16 words (steps) along k of row x, starting at element k.
template <int KPACK, GemmSrc S>
inline __m512i gemm_load_kwords(const GemmPackSrc& s, int64_t off, int64_t kleft) {
  if constexpr (KPACK == 2) {
    return gemm_load_bf16x32<S>(s, off, kleft);
  } else {
    return gemm_load_f32x16<S>(s, off, kleft);
  }
}

// GCC 12's _mm512_unpack{lo,hi}_epi32 pass _mm512_undefined_epi32() (a self-initialised
// variable) as the unused merge source, which -Wuninitialized reports once inlined here in
// some builds (ASan). Nothing is uninitialised: the mask is all ones.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"

// In-register transpose of a 16 x 16 matrix of 32-bit words.
inline void gemm_transpose16(__m512i (&r)[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // r[4i + c], 128-bit lane L, holds rows 4i..4i+3 of column 4L + c.
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512i a = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);
    const __m512i d = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    const __m512i e = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_shuffle_i32x4(a, d, 0x88);
    t[8 + c] = _mm512_shuffle_i32x4(a, d, 0xdd);
    t[4 + c] = _mm512_shuffle_i32x4(b, e, 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(b, e, 0xdd);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Transpose of an 8 x 16 block of words (8 rows, 16 steps) stored as `nsteps` (<= 16) output
// steps of 8 words each, 8 words apart: the A micro-panel (MR = 8) case, in half the shuffles
// of padding it to 16 x 16.
inline void gemm_transpose8x16_store(const __m512i (&r)[8], uint32_t* dst, int64_t nsteps) {
  __m512i t[8], u[8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + c], 128-bit lane L: rows 4i..4i+3 of step 4L + c. Step j = 4L + c is lane L of
  // u[c] followed by lane L of u[4 + c].
#pragma GCC unroll 4
  for (int c = 0; c < 4; ++c) {
    const __m512i lo = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44);  // u[c].0 u[c].1 u[4+c].0 u[4+c].1
    const __m512i hi = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xee);  // lanes 2, 3
    const __m512i s01 = _mm512_shuffle_i32x4(lo, lo, 0xd8);         // step c | step 4 + c
    const __m512i s23 = _mm512_shuffle_i32x4(hi, hi, 0xd8);         // step 8 + c | step 12 + c
    const __m512i v[2] = {s01, s23};
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const int j0 = 8 * h + c, j1 = 8 * h + 4 + c;
      if (j0 < nsteps) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * j0), _mm512_castsi512_si256(v[h]));
      if (j1 < nsteps) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * j1), _mm512_extracti64x4_epi64(v[h], 1));
    }
  }
}

#pragma GCC diagnostic pop

inline void gemm_store_words(uint32_t* dst, int gw, __m512i v) {
  if (gw == 16) {
    _mm512_storeu_si512(dst, v);
  } else {
    _mm512_mask_storeu_epi32(dst, gemm_mask16(gw), v);
  }
}

template <int KPACK, GemmSrc S>
void gemm_pack_kcontig512(const GemmPackSrc& s, int64_t x0, int64_t nx, int64_t k0, int64_t kc,
                          int w, uint32_t* dst) {
  const int64_t ksteps = (kc + KPACK - 1) / KPACK;
  const int64_t panels = (nx + w - 1) / w;
  for (int64_t p = 0; p < panels; ++p) {
    uint32_t* pd = dst + p * w * ksteps;
    for (int g0 = 0; g0 < w; g0 += 16) {
      const int gw = std::min(16, w - g0);
      const int64_t rows = std::clamp<int64_t>(nx - (p * w + g0), 0, gw);
      const int64_t xb = x0 + p * w + g0;
      if constexpr (KPACK == 1 && S == GemmSrc::cfp8) {
        if (w == 8) {
          // The A micro-panel: 32 steps of each of the 8 rows from one decode, in registers,
          // two transposes (fewer instructions than parking 64 steps in L1 as below).
          for (int64_t s0 = 0; s0 < ksteps; s0 += 32) {
            const int64_t kleft = kc - s0;
            const int64_t koff = (k0 + s0) * s.sk;
            __m512i lo[8], hi[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; ++i) {
              if (i < rows) {
                const int64_t off = (xb + i) * s.sx + koff;
                _mm_prefetch(s.base + off + 256, _MM_HINT_T0);
                gemm_load_cfp8_f32x32(s, off, kleft, lo[i], hi[i]);
              } else {
                lo[i] = hi[i] = _mm512_setzero_si512();
              }
            }
            gemm_transpose8x16_store(lo, pd + s0 * 8, std::min<int64_t>(16, ksteps - s0));
            if (ksteps - s0 > 16) gemm_transpose8x16_store(hi, pd + (s0 + 16) * 8, std::min<int64_t>(16, ksteps - s0 - 16));
          }
          continue;
        }
        // 16 rows: kV x 16 steps of each row from one decode, parked in L1, then kV transposes.
        constexpr int kV = kGemmCfp8F32PerDecode / 16;
        alignas(64) uint32_t rowbuf[16][16 * kV];
        for (int64_t s0 = 0; s0 < ksteps; s0 += 16 * kV) {
          const int64_t kleft = kc - s0;
          const int64_t koff = (k0 + s0) * s.sk;
          for (int i = 0; i < rows; ++i) {
            const int64_t off = (xb + i) * s.sx + koff;
            _mm_prefetch(s.base + off + 256, _MM_HINT_T0);
            gemm_store_cfp8_f32<kV>(s, off, kleft, rowbuf[i]);
          }
          for (int v = 0; v < kV && s0 + 16 * v < ksteps; ++v) {
            const int64_t nsteps = std::min<int64_t>(16, ksteps - s0 - 16 * v);
            __m512i r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_load_si512(rowbuf[i] + 16 * v) : _mm512_setzero_si512();
            gemm_transpose16(r);
            for (int64_t t = 0; t < nsteps; ++t) gemm_store_words(pd + (s0 + 16 * v + t) * w + g0, gw, r[t]);
          }
        }
        continue;
      }
      if (w == 8) {  // the A micro-panel: one group of 8 rows
        for (int64_t s0 = 0; s0 < ksteps; s0 += 16) {
          const int64_t kleft = kc - s0 * KPACK;
          const int64_t koff = (k0 + s0 * KPACK) * s.sk;
          __m512i r[8];
#pragma GCC unroll 8
          for (int i = 0; i < 8; ++i) {
            if (i < rows) {
              const int64_t off = (xb + i) * s.sx + koff;
              _mm_prefetch(s.base + (off * kSrcBytes<S>) + 256, _MM_HINT_T0);
              r[i] = gemm_load_kwords<KPACK, S>(s, off, kleft);
            } else {
              r[i] = _mm512_setzero_si512();
            }
          }
          gemm_transpose8x16_store(r, pd + s0 * 8, std::min<int64_t>(16, ksteps - s0));
        }
        continue;
      }
      for (int64_t s0 = 0; s0 < ksteps; s0 += 16) {
        const int64_t kleft = kc - s0 * KPACK;
        const int64_t koff = (k0 + s0 * KPACK) * s.sk;
        __m512i r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) {
          if (i < rows) {
            const int64_t off = (xb + i) * s.sx + koff;
            // 16 rows are 16 streams a row stride apart (often a page apart): the hardware
            // prefetchers lose track, so fetch 256 bytes ahead in each row ourselves.
            _mm_prefetch(s.base + (off * kSrcBytes<S>) + 256, _MM_HINT_T0);
            r[i] = gemm_load_kwords<KPACK, S>(s, off, kleft);
          } else {
            r[i] = _mm512_setzero_si512();
          }
        }
        gemm_transpose16(r);
        const int64_t nsteps = std::min<int64_t>(16, ksteps - s0);
        for (int64_t t = 0; t < nsteps; ++t) gemm_store_words(pd + (s0 + t) * w + g0, gw, r[t]);
      }
    }
  }
}

template <int KPACK, GemmSrc S>
void gemm_pack_xcontig512(const GemmPackSrc& s, int64_t x0, int64_t nx, int64_t k0, int64_t kc,
                          int w, uint32_t* dst) {
  const int64_t ksteps = (kc + KPACK - 1) / KPACK;
  const int64_t panels = (nx + w - 1) / w;
  // k outer: each source row is read front to back across all panels. Walking one panel's
  // column strip down the rows instead jumps a row stride per step, which defeats the
  // hardware prefetchers and made this loop memory-latency bound.
  for (int64_t st = 0; st < ksteps; ++st) {
    const int64_t k = k0 + st * KPACK;
    const bool pair = KPACK == 2 && st * 2 + 1 < kc;
    if constexpr (KPACK == 1 && S == GemmSrc::cfp8) {
      if (w == 8) {
        // A micro-panels, 8 words each: one decode covers the step of several panels.
        constexpr int kPer = kGemmCfp8F32PerDecode / 16;  // vectors per decode, 2 panels each
        for (int64_t p = 0; p < panels; p += 2 * kPer) {
          alignas(64) uint32_t words[16 * kPer];
          gemm_store_cfp8_f32<kPer>(s, (x0 + p * 8) * s.sx + k * s.sk, std::clamp<int64_t>(nx - p * 8, 0, 16 * kPer), words);
          const int64_t np = std::min<int64_t>(2 * kPer, panels - p);
          for (int64_t i = 0; i < np; ++i) {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + (p + i) * 8 * ksteps + st * 8),
                                _mm256_load_si256(reinterpret_cast<const __m256i*>(words + 8 * i)));
          }
        }
        continue;
      }
    }
    for (int64_t p = 0; p < panels; ++p) {
      uint32_t* pd = dst + p * w * ksteps + st * w;
      for (int g0 = 0; g0 < w; g0 += 16) {
        const int gw = std::min(16, w - g0);
        const int64_t off = (x0 + p * w + g0) * s.sx + k * s.sk;
        if constexpr (KPACK == 1 && S == GemmSrc::cfp8) {
          // Up to kGemmCfp8F32PerDecode words (whole groups of 16) from one decode.
          const int n = std::min(kGemmCfp8F32PerDecode, w - g0) / 16;
          if (n >= 2) {
            const int64_t valid = std::clamp<int64_t>(nx - (p * w + g0), 0, 16 * n);
            if (n == 4) gemm_store_cfp8_f32<4>(s, off, valid, pd + g0);
            if (n == 3) gemm_store_cfp8_f32<3>(s, off, valid, pd + g0);
            if (n == 2) gemm_store_cfp8_f32<2>(s, off, valid, pd + g0);
            g0 += 16 * (n - 1);
            continue;
          }
        }
        const int64_t valid = std::clamp<int64_t>(nx - (p * w + g0), 0, gw);
        __m512i words;
        if constexpr (KPACK == 2) {
          const __m512i lo = _mm512_cvtepu16_epi32(gemm_load_bf16x16<S>(s, off, valid));
          const __m512i hi = pair ? _mm512_cvtepu16_epi32(gemm_load_bf16x16<S>(s, off + s.sk, valid))
                                  : _mm512_setzero_si512();
          words = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
        } else {
          words = gemm_load_f32x16<S>(s, off, valid);
        }
        gemm_store_words(pd + g0, gw, words);
      }
    }
  }
}

template <int KPACK, GemmSrc S>
void gemm_pack512_src(const GemmPackSrc& s, bool kcontig, int64_t x0, int64_t nx, int64_t k0,
                      int64_t kc, int w, uint32_t* dst) {
  if (kcontig) {
    gemm_pack_kcontig512<KPACK, S>(s, x0, nx, k0, kc, w, dst);
  } else {
    gemm_pack_xcontig512<KPACK, S>(s, x0, nx, k0, kc, w, dst);
  }
}

// GemmPackFn for kpack 1 (f32 panels from any source) or 2 (bf16 panels from bf16 / cfp8).
template <int KPACK>
void gemm_pack512(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0, int64_t kc, int w,
                  void* dst) {
  GemmPackSrc s;
  s.base = static_cast<const char*>(op.data);
  s.sx = op.sx;
  s.sk = op.sk;
  // A single row or column may come with either stride 1; the k-contiguous path needs sk == 1.
  const bool kcontig = op.sk == 1;
  uint32_t* out = static_cast<uint32_t*>(dst);
  switch (op.type) {
    case DType::f32:
      if constexpr (KPACK == 1) {
        gemm_pack512_src<1, GemmSrc::f32>(s, kcontig, x0, nx, k0, kc, w, out);
      } else {
        gemm_pack_generic_bf16(op, x0, nx, k0, kc, w, dst);
      }
      return;
    case DType::bf16:
      gemm_pack512_src<KPACK, GemmSrc::bf16>(s, kcontig, x0, nx, k0, kc, w, out);
      return;
    default: {
#if !defined(__AVX512VBMI__) && defined(TESSERA_HAVE_CFP8_VBMI)
      if (gemm_cfp8_vbmi()) {
        gemm_pack512_cfp8_vbmi(KPACK, op, x0, nx, k0, kc, w, dst);
        return;
      }
#endif
      gemm_cfp8_lut_setup(s, gemm_cfp8_bf16_table(op.fmt));
      gemm_pack512_src<KPACK, GemmSrc::cfp8>(s, kcontig, x0, nx, k0, kc, w, out);
      return;
    }
  }
}

}  // namespace
}  // namespace tessera::kernels
