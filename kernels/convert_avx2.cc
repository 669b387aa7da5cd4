// AVX2 conversions, 8 lanes: the same arithmetic as convert_avx512.cc and core/cfp8.h.
#include <tessera/kernels/convert.h>

#include <immintrin.h>

namespace tessera::kernels {
namespace {

inline __m256i bf16_round(__m256i u) {
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));  // abs >= 0
  __m256i hi = _mm256_srli_epi32(u, 16);
  __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  __m256i q = _mm256_or_si256(hi, _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, q, nan);
}

// 16 int32 lanes holding values < 65536 -> 16 uint16 in order.
inline __m256i narrow16(__m256i a, __m256i b) {
  return _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
}
// 8 int32 lanes holding values < 256 -> 8 bytes in order (low half of the result).
inline __m128i narrow8(__m256i v) {
  __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(v, v), _mm256_setzero_si256());
  return _mm_unpacklo_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
}

void f32_to_bf16_256(const float* s, uint16_t* d, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i a = bf16_round(_mm256_castps_si256(_mm256_loadu_ps(s + i)));
    __m256i b = bf16_round(_mm256_castps_si256(_mm256_loadu_ps(s + i + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), narrow16(a, b));
  }
  convert_fns_scalar()->f32_to_bf16(s + i, d + i, n - i);
}

void bf16_to_f32_256(const uint16_t* s, float* d, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i)));
    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
  }
  convert_fns_scalar()->bf16_to_f32(s + i, d + i, n - i);
}

struct Split256 {
  __m256i e;
  __m256 q;
};
inline Split256 split(__m256i abs, int M, int bias) {
  __m256i E = _mm256_sub_epi32(_mm256_srli_epi32(abs, 23), _mm256_set1_epi32(127));
  __m256i e = _mm256_max_epi32(_mm256_add_epi32(E, _mm256_set1_epi32(bias)), _mm256_set1_epi32(1));
  __m256i k = _mm256_sub_epi32(_mm256_set1_epi32(M + bias + 127), e);
  __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(k, 23));
  __m256 q = _mm256_min_ps(_mm256_mul_ps(_mm256_castsi256_ps(abs), scale), _mm256_set1_ps(64.0f));
  return {e, q};
}
inline __m128i assemble(__m256i u, __m256i e, __m256i r, int M, __m256i nan) {
  __m256i code = _mm256_add_epi32(_mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), M), r);
  code = _mm256_min_epi32(code, _mm256_set1_epi32(127));
  code = _mm256_or_si256(code, _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(kCfp8NanCode), nan);
  return narrow8(code);
}
inline __m256i nan_mask(__m256i abs) { return _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000)); }
inline size_t count(__m256i mask) { return __builtin_popcount(_mm256_movemask_ps(_mm256_castsi256_ps(mask))); }

size_t f32_to_cfp8_rne_256(const float* s, uint8_t* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t nans = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_castps_si256(_mm256_loadu_ps(s + i));
    __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = nan_mask(abs);
    nans += count(nan);
    Split256 sp = split(abs, M, f.bias);
    __m256i r = _mm256_cvttps_epi32(_mm256_round_ps(sp.q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(d + i), assemble(u, sp.e, r, M, nan));
  }
  return nans + convert_fns_scalar()->f32_to_cfp8_rne(s + i, d + i, n - i, f);
}

inline __m256i sr_bits(__m256i idx, __m256i key) {
  __m256i x = _mm256_xor_si256(_mm256_mullo_epi32(idx, _mm256_set1_epi32(0x9e3779b9u)), key);
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x846ca68bu));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

size_t f32_to_cfp8_sr_256(const float* s, uint8_t* d, size_t n, Cfp8Format f, uint32_t key,
                          uint32_t index0) {
  const int M = f.mant_bits();
  const __m256i vkey = _mm256_set1_epi32(static_cast<int>(key));
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  size_t nans = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_castps_si256(_mm256_loadu_ps(s + i));
    __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = nan_mask(abs);
    nans += count(nan);
    Split256 sp = split(abs, M, f.bias);
    __m256i fixed = _mm256_cvttps_epi32(_mm256_mul_ps(sp.q, _mm256_set1_ps(8388608.0f)));
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(index0 + i)), iota);
    __m256i rnd = _mm256_and_si256(sr_bits(idx, vkey), _mm256_set1_epi32(0x7fffff));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(fixed, rnd), 23);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(d + i), assemble(u, sp.e, r, M, nan));
  }
  return nans + convert_fns_scalar()->f32_to_cfp8_sr(s + i, d + i, n - i, f, key,
                                                     index0 + static_cast<uint32_t>(i));
}

inline __m256i decode_bits(__m128i codes8, int M, int bias) {
  __m256i c = _mm256_cvtepu8_epi32(codes8);
  __m256i e = _mm256_srli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x7f)), M);
  __m256i m = _mm256_and_si256(c, _mm256_set1_epi32((1 << M) - 1));
  __m256i one = _mm256_set1_epi32(1);
  __m256i v = _mm256_or_si256(m, _mm256_slli_epi32(_mm256_min_epi32(e, one), M));
  __m256i k = _mm256_add_epi32(_mm256_max_epi32(e, one), _mm256_set1_epi32(127 - bias - M));
  __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_castsi256_ps(_mm256_slli_epi32(k, 23)));
  __m256i sign = _mm256_slli_epi32(_mm256_and_si256(c, _mm256_set1_epi32(0x80)), 24);
  return _mm256_or_si256(_mm256_castps_si256(r), sign);
}

void cfp8_to_f32_256(const uint8_t* s, float* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i b = decode_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)), M, f.bias);
    _mm256_storeu_ps(d + i, _mm256_castsi256_ps(b));
  }
  convert_fns_scalar()->cfp8_to_f32(s + i, d + i, n - i, f);
}

void cfp8_to_bf16_256(const uint8_t* s, uint16_t* d, size_t n, Cfp8Format f) {
  const int M = f.mant_bits();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256i a = decode_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i)), M, f.bias);
    __m256i b = decode_bits(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(s + i + 8)), M, f.bias);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                        narrow16(_mm256_srli_epi32(a, 16), _mm256_srli_epi32(b, 16)));
  }
  convert_fns_scalar()->cfp8_to_bf16(s + i, d + i, n - i, f);
}

const ConvertFns k256 = {f32_to_bf16_256,    bf16_to_f32_256, f32_to_cfp8_rne_256,
                         f32_to_cfp8_sr_256, cfp8_to_f32_256, cfp8_to_bf16_256};
}  // namespace

const ConvertFns* convert_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
