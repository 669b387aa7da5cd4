// Inline AVX-512 (F, DQ) helpers shared by the *_avx512.cc kernels: tail masks, horizontal
// reductions, exp, erfc and the normal CDF. Include only from sources compiled with
// tessera_isa_sources(... avx512 ...); vec_math_avx2.h is the 8-lane twin.
#pragma once

#include <immintrin.h>

#include <cstddef>

namespace tessera::kernels::v512 {

inline constexpr size_t kLanes = 16;

// Lanes [0, n) set, n clamped to 16.
inline __mmask16 tail_mask(size_t n) {
  return n >= kLanes ? __mmask16(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}

// GCC 12's _mm512_reduce_add_ps extracts through an _mm256_undefined_pd() merge source, which
// -Wuninitialized reports in some builds (ASan; PR105593); nothing is uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
inline float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }
#pragma GCC diagnostic pop
// Through memory: GCC 12's _mm512_reduce_max_ps trips a false -Wuninitialized (PR105593).
inline float hmax(__m512 v) {
  alignas(64) float a[kLanes];
  _mm512_store_ps(a, v);
  float m = a[0];
  for (size_t i = 1; i < kLanes; ++i) m = a[i] > m ? a[i] : m;
  return m;
}

// e^x, within 2 ulp. Overflow gives +inf, results below the smallest denormal 0; NaN stays NaN.
// Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r, scalef by 2^n.
inline __m512 exp(__m512 x) {
  // max/min with the constant first return x when x is NaN.
  x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

// erfc(z) for z >= 0 given z*z = zz_hi + zz_lo exactly (callers get the pair from an FMA).
// Numerical Recipes' erfcc: t = 1/(1 + z/2), erfc(z) = t exp(-z^2 + P(t)), relative error below
// 1.2e-7 in exact arithmetic. The exponent -z^2 + P(t) is carried as an unevaluated sum (TwoSum)
// so that, for large z, rounding -z^2 does not become a relative error of the result; in f32
// the whole is within ~5e-7 relative of erfc(z) wherever the result is a normal float.
inline __m512 erfc_core(__m512 z, __m512 zz_hi, __m512 zz_lo) {
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), one));
  __m512 p = _mm512_set1_ps(0.17087277f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
  // s + e == p - zz_hi exactly.
  __m512 a = _mm512_sub_ps(_mm512_setzero_ps(), zz_hi);
  __m512 s = _mm512_add_ps(a, p);
  __m512 bb = _mm512_sub_ps(s, a);
  __m512 e = _mm512_add_ps(_mm512_sub_ps(a, _mm512_sub_ps(s, bb)), _mm512_sub_ps(p, bb));
  __m512 corr = _mm512_add_ps(one, _mm512_sub_ps(e, zz_lo));
  return _mm512_mul_ps(_mm512_mul_ps(t, exp(s)), corr);
}

inline __m512 abs(__m512 x) { return _mm512_abs_ps(x); }

// erf(x), absolute error below 1e-6 (about 4e-7).
inline __m512 erf(__m512 x) {
  // erfc(10) ~ 2e-45: clamping keeps the exponent finite; min with the constant first keeps NaN.
  __m512 z = _mm512_min_ps(_mm512_set1_ps(10.0f), abs(x));
  __m512 hi = _mm512_mul_ps(z, z);
  __m512 lo = _mm512_fmsub_ps(z, z, hi);
  __m512 r = _mm512_sub_ps(_mm512_set1_ps(1.0f), erfc_core(z, hi, lo));
  // Copy the sign of x.
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r),
                                             _mm512_and_si512(_mm512_castps_si512(x), sign)));
}

// The standard normal CDF Phi(x) = erfc(-x/sqrt2)/2, relatively accurate in both tails, and,
// when pdf != nullptr, the density phi(x) = exp(-x^2/2)/sqrt(2 pi). Inputs with |x| > 15 are
// treated as |x| = 15 (Phi is 0 or 1 and phi 0 in f32 there), so infinities give finite
// exponents; NaN gives NaN.
inline __m512 normal_cdf(__m512 x, __m512* pdf = nullptr) {
  __m512 ax = _mm512_min_ps(_mm512_set1_ps(15.0f), abs(x));
  __m512 hx = _mm512_mul_ps(ax, _mm512_set1_ps(0.5f));  // exact
  __m512 hi = _mm512_mul_ps(hx, ax);                    // x^2/2 = hi + lo exactly
  __m512 lo = _mm512_fmsub_ps(hx, ax, hi);
  __m512 z = _mm512_mul_ps(ax, _mm512_set1_ps(0.70710678118654752f));
  __m512 half_erfc = _mm512_mul_ps(_mm512_set1_ps(0.5f), erfc_core(z, hi, lo));
  __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
  __m512 cdf = _mm512_mask_sub_ps(half_erfc, pos, _mm512_set1_ps(1.0f), half_erfc);
  if (pdf) {
    __m512 g = exp(_mm512_sub_ps(_mm512_setzero_ps(), hi));
    g = _mm512_mul_ps(g, _mm512_sub_ps(_mm512_set1_ps(1.0f), lo));
    *pdf = _mm512_mul_ps(g, _mm512_set1_ps(0.39894228040143268f));
  }
  return cdf;
}

}  // namespace tessera::kernels::v512
