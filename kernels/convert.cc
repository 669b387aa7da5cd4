#include <tessera/kernels/convert.h>

#include <tessera/kernels/dispatch.h>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const ConvertFns* convert_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const ConvertFns* convert_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<ConvertFns>& pick() {
  // No conversion needs the BF16 instructions: vcvtneps2bf16 flushes denormals to zero, which
  // would break bit-equality with the reference, so bf16 rounding uses integer AVX-512.
  static const Impl<ConvertFns> kList[] = {
      {"avx512", Isa::avx512, convert_fns_avx512()},
      {"avx2", Isa::avx2, convert_fns_avx2()},
      {"scalar", Isa::scalar, convert_fns_scalar()},
  };
  return select("convert", kList);
}
}  // namespace

const ConvertFns& convert_fns() { return *pick().fns; }
const char* convert_impl_name() { return pick().name; }

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) { convert_fns().f32_to_bf16(src, dst, n); }
void bf16_to_f32(const uint16_t* src, float* dst, size_t n) { convert_fns().bf16_to_f32(src, dst, n); }
void cfp8_to_f32(const uint8_t* src, float* dst, size_t n, Cfp8Format fmt) {
  check_cfp8_bias(fmt.bias);
  convert_fns().cfp8_to_f32(src, dst, n, fmt);
}
void cfp8_to_bf16(const uint8_t* src, uint16_t* dst, size_t n, Cfp8Format fmt) {
  check_cfp8_bias(fmt.bias);
  convert_fns().cfp8_to_bf16(src, dst, n, fmt);
}

void f32_to_cfp8(const float* src, uint8_t* dst, size_t n, Cfp8Format fmt, Rounding rounding,
                 uint64_t seed, uint64_t offset) {
  check_cfp8_bias(fmt.bias);
  const ConvertFns& fns = convert_fns();
  size_t nans = 0;
  if (rounding == Rounding::nearest_even) {
    nans = fns.f32_to_cfp8_rne(src, dst, n, fmt);
  } else {
    size_t done = 0;
    while (done < n) {
      uint64_t pos = offset + done;
      uint64_t block_left = (uint64_t{1} << 32) - (pos & 0xffffffffu);
      size_t len = static_cast<size_t>(std::min<uint64_t>(n - done, block_left));
      nans += fns.f32_to_cfp8_sr(src + done, dst + done, len, fmt, cfp8_sr_key(seed, pos >> 32),
                                 static_cast<uint32_t>(pos));
      done += len;
    }
  }
  if (nans) cfp8_invalid_counter().fetch_add(nans, std::memory_order_relaxed);
}

}  // namespace tessera::kernels
