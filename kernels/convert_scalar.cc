// The reference rung: loops over the scalar conversions of core/. Always built.
#include <tessera/kernels/convert.h>

#include <cmath>

namespace tessera::kernels {
namespace {

void f32_to_bf16_ref(const float* s, uint16_t* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = ::tessera::f32_to_bf16(s[i]);
}
void bf16_to_f32_ref(const uint16_t* s, float* d, size_t n) {
  for (size_t i = 0; i < n; ++i) d[i] = ::tessera::bf16_to_f32(s[i]);
}
// Count NaNs here and encode them without touching the global counter twice.
size_t f32_to_cfp8_rne_ref(const float* s, uint8_t* d, size_t n, Cfp8Format f) {
  size_t nans = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(s[i])) {
      ++nans;
      d[i] = kCfp8NanCode;
    } else {
      d[i] = cfp8_encode(s[i], f);
    }
  }
  return nans;
}
size_t f32_to_cfp8_sr_ref(const float* s, uint8_t* d, size_t n, Cfp8Format f, uint32_t key,
                          uint32_t index0) {
  size_t nans = 0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isnan(s[i])) {
      ++nans;
      d[i] = kCfp8NanCode;
    } else {
      d[i] = cfp8_encode_stochastic(s[i], f, cfp8_sr_bits(key, index0 + static_cast<uint32_t>(i)));
    }
  }
  return nans;
}
void cfp8_to_f32_ref(const uint8_t* s, float* d, size_t n, Cfp8Format f) {
  for (size_t i = 0; i < n; ++i) d[i] = cfp8_decode(s[i], f);
}
void cfp8_to_bf16_ref(const uint8_t* s, uint16_t* d, size_t n, Cfp8Format f) {
  // Exact: every cfp8 value is a bf16 value, so truncating the f32 bits loses nothing.
  for (size_t i = 0; i < n; ++i) d[i] = static_cast<uint16_t>(f32_bits(cfp8_decode(s[i], f)) >> 16);
}

const ConvertFns kScalar = {f32_to_bf16_ref,  bf16_to_f32_ref, f32_to_cfp8_rne_ref,
                            f32_to_cfp8_sr_ref, cfp8_to_f32_ref, cfp8_to_bf16_ref};
}  // namespace

const ConvertFns* convert_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
