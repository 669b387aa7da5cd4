// Inline AVX2 + FMA helpers shared by the *_avx2.cc kernels; the 8-lane twin of
// vec_math_avx512.h (same algorithms and constants, see there for the error analysis). Include
// only from sources compiled with tessera_isa_sources(... avx2 ...).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels::v256 {

inline constexpr size_t kLanes = 8;

// Lanes [0, n) all-ones, n clamped to 8; for _mm256_maskload_ps / _mm256_maskstore_ps.
inline __m256i tail_mask(size_t n) {
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int k = n >= kLanes ? 8 : static_cast<int>(n);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(k), iota);
}
inline __m256 load_tail(const float* p, size_t n) { return _mm256_maskload_ps(p, tail_mask(n)); }
inline void store_tail(float* p, size_t n, __m256 v) { _mm256_maskstore_ps(p, tail_mask(n), v); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 abs(__m256 x) {
  return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
}

// e^x within 2 ulp for x <= 88.37 (larger x give about 2.4e38, not inf: the kernels only ask
// for x <= 0); results that would be denormal are flushed to 0; NaN stays NaN.
inline __m256 exp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365479f);  // ln(FLT_MIN)
  __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), _mm256_max_ps(lo, x));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // n is in [-126, 127] here, so 2^n is built from its exponent bits (NaN lanes stay NaN via p).
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}

// erfc(z) for z >= 0 given z*z = zz_hi + zz_lo exactly; see vec_math_avx512.h.
inline __m256 erfc_core(__m256 z, __m256 zz_hi, __m256 zz_lo) {
  const __m256 one = _mm256_set1_ps(1.0f);
  __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), one));
  __m256 p = _mm256_set1_ps(0.17087277f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
  __m256 a = _mm256_sub_ps(_mm256_setzero_ps(), zz_hi);
  __m256 s = _mm256_add_ps(a, p);
  __m256 bb = _mm256_sub_ps(s, a);
  __m256 e = _mm256_add_ps(_mm256_sub_ps(a, _mm256_sub_ps(s, bb)), _mm256_sub_ps(p, bb));
  __m256 corr = _mm256_add_ps(one, _mm256_sub_ps(e, zz_lo));
  return _mm256_mul_ps(_mm256_mul_ps(t, exp(s)), corr);
}

inline __m256 erf(__m256 x) {
  __m256 z = _mm256_min_ps(_mm256_set1_ps(10.0f), abs(x));
  __m256 hi = _mm256_mul_ps(z, z);
  __m256 lo = _mm256_fmsub_ps(z, z, hi);
  __m256 r = _mm256_sub_ps(_mm256_set1_ps(1.0f), erfc_core(z, hi, lo));
  __m256 sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u))));
  return _mm256_or_ps(r, sign);
}

inline __m256 normal_cdf(__m256 x, __m256* pdf = nullptr) {
  __m256 ax = _mm256_min_ps(_mm256_set1_ps(15.0f), abs(x));
  __m256 hx = _mm256_mul_ps(ax, _mm256_set1_ps(0.5f));
  __m256 hi = _mm256_mul_ps(hx, ax);
  __m256 lo = _mm256_fmsub_ps(hx, ax, hi);
  __m256 z = _mm256_mul_ps(ax, _mm256_set1_ps(0.70710678118654752f));
  __m256 half_erfc = _mm256_mul_ps(_mm256_set1_ps(0.5f), erfc_core(z, hi, lo));
  __m256 pos = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GT_OQ);
  __m256 cdf = _mm256_blendv_ps(half_erfc, _mm256_sub_ps(_mm256_set1_ps(1.0f), half_erfc), pos);
  if (pdf) {
    __m256 g = exp(_mm256_sub_ps(_mm256_setzero_ps(), hi));
    g = _mm256_mul_ps(g, _mm256_sub_ps(_mm256_set1_ps(1.0f), lo));
    *pdf = _mm256_mul_ps(g, _mm256_set1_ps(0.39894228040143268f));
  }
  return cdf;
}

}  // namespace tessera::kernels::v256
