// f32 -> f32 rounding to bf16 and cfp8 values in AVX-512 registers, shared by the bulk
// conversion (convert_avx512.cc, f32_round_to) and the convolution kernels that round operands
// as they load them. Include only from sources compiled with AVX-512 flags.
//
// cfp8 is rounded in the f32 domain instead of being encoded and decoded: at or above the
// format's smallest normal, the mantissa is cut to M bits with round-to-nearest-even on the bits
// (the bf16 trick); below it, adding and subtracting 2^23 quanta rounds to a multiple of the
// subnormal quantum; then saturation at +-max (Inf included) and NaN -> +0, as core/cfp8.h.
#pragma once

#include <tessera/core/cfp8.h>

#include <immintrin.h>

namespace tessera::kernels {
namespace {

// NaN stays a quiet NaN (core/bf16.h).
inline __m512 round_bf16_ps(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  const __m512i r = _mm512_and_si512(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), hi);
  const __m512i q = _mm512_or_si512(_mm512_and_si512(u, hi), _mm512_set1_epi32(0x00400000));
  return _mm512_castsi512_ps(_mm512_mask_blend_epi32(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), r, q));
}

// The per-format constants, from the scalar decoder.
struct Cfp8Round512 {
  __m512 min_normal, max_value, magic;
  __m512i half_minus_1, keep, lsb_shift;
  explicit Cfp8Round512(Cfp8Format f) {
    const int M = f.mant_bits();
    min_normal = _mm512_set1_ps(cfp8_decode(static_cast<uint8_t>(1 << M), f));
    max_value = _mm512_set1_ps(cfp8_decode(0x7f, f));
    magic = _mm512_set1_ps(cfp8_decode(1, f) * 8388608.0f);  // the subnormal quantum * 2^23
    half_minus_1 = _mm512_set1_epi32((1 << (22 - M)) - 1);
    keep = _mm512_set1_epi32(~((1 << (23 - M)) - 1));
    lsb_shift = _mm512_set1_epi32(23 - M);
  }
  // NaN lanes are reported in *nan when it is given.
  __m512 operator()(__m512 v, __mmask16* nan = nullptr) const {
    __m512i au;
    __mmask16 is_nan;
    const __m512 r = round(v, au, is_nan);
    if (nan) *nan = is_nan;
    return r;
  }
  // The same, also giving |v| as bits (au) and the NaN lanes: callers that track amax take an
  // unsigned max of au (NaN bits, above 0x7f800000, beat every number).
  __m512 round(__m512 v, __m512i& au, __mmask16& is_nan) const {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    const __m512i u = _mm512_castps_si512(v);
    au = _mm512_and_si512(u, abs_mask);
    const __m512 a = _mm512_castsi512_ps(au);
    is_nan = _mm512_cmpgt_epu32_mask(au, _mm512_set1_epi32(0x7f800000));
    const __m512i lsb = _mm512_and_si512(_mm512_srlv_epi32(au, lsb_shift), _mm512_set1_epi32(1));
    const __m512i rn = _mm512_and_si512(_mm512_add_epi32(au, _mm512_add_epi32(half_minus_1, lsb)), keep);
    const __m512 rs = _mm512_sub_ps(_mm512_add_ps(a, magic), magic);
    __m512 r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, min_normal, _CMP_LT_OQ), _mm512_castsi512_ps(rn), rs);
    r = _mm512_min_ps(r, max_value);  // a rounded Inf (a NaN pattern) becomes max
    // The magnitude under abs_mask, the sign from v (0xca: A ? B : C), NaN lanes +0: one op.
    return _mm512_castsi512_ps(
        _mm512_maskz_ternarylogic_epi32(static_cast<__mmask16>(~is_nan), abs_mask, _mm512_castps_si512(r), u, 0xca));
  }
};

}  // namespace
}  // namespace tessera::kernels
