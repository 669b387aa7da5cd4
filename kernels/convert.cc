#include <tessera/kernels/convert.h>

#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>
#include <tessera/kernels/reduce.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const ConvertFns* convert_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const ConvertFns* convert_fns_avx512() { return nullptr; }
#else
void f32_round_bf16_avx512(const float* s, float* d, size_t n);
size_t f32_round_cfp8_avx512(const float* s, float* d, size_t n, Cfp8Format f);
size_t f32_round_cfp8_bf16_avx512(const float* s, uint16_t* d, size_t n, Cfp8Format f, float* amax);
size_t f32_to_cfp8_rne_amax_avx512(const float* s, uint8_t* d, size_t n, Cfp8Format f, float* amax);
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

namespace {
// Elements per parallel piece of the f32 -> narrow encoders (as amax() chunks its input, so the
// scan of a piece just converted finds it in cache).
constexpr size_t kPiece = 4 * kChunkElems;

size_t f32_to_cfp8_piece(const ConvertFns& fns, const float* src, uint8_t* dst, size_t n, Cfp8Format fmt,
                         Rounding rounding, uint64_t seed, uint64_t offset) {
  if (rounding == Rounding::nearest_even) return fns.f32_to_cfp8_rne(src, dst, n, fmt);
  size_t nans = 0, done = 0;
  while (done < n) {
    uint64_t pos = offset + done;
    uint64_t block_left = (uint64_t{1} << 32) - (pos & 0xffffffffu);
    size_t len = static_cast<size_t>(std::min<uint64_t>(n - done, block_left));
    nans += fns.f32_to_cfp8_sr(src + done, dst + done, len, fmt, cfp8_sr_key(seed, pos >> 32),
                               static_cast<uint32_t>(pos));
    done += len;
  }
  return nans;
}

// Converts piece by piece (in parallel when there are several); with `amax_out`, also returns
// max |src| as amax() defines it, each piece scanned right after it was converted.
void f32_to_cfp8_pieces(const float* src, uint8_t* dst, size_t n, Cfp8Format fmt, Rounding rounding,
                        uint64_t seed, uint64_t offset, float* amax_out) {
  check_cfp8_bias(fmt.bias);
  const ConvertFns& fns = convert_fns();
  const ReduceFns* red = amax_out ? &reduce_fns() : nullptr;
  std::vector<size_t> nans(chunk_count(n, kPiece), 0);
  std::vector<float> partial(amax_out ? nans.size() : 0, 0.f);
  for_each_indexed_chunk(n, kPiece, [&](size_t c, size_t i, size_t j) {
#if defined(TESSERA_HAVE_AVX512)
    if (red && rounding == Rounding::nearest_even && active_isa() >= Isa::avx512) {
      nans[c] = f32_to_cfp8_rne_amax_avx512(src + i, dst + i, j - i, fmt, &partial[c]);  // one loop
      return;
    }
#endif
    nans[c] = f32_to_cfp8_piece(fns, src + i, dst + i, j - i, fmt, rounding, seed, offset + i);
    if (red) partial[c] = red->amax(src + i, j - i);
  });
  size_t total = 0;
  for (size_t k : nans) total += k;
  if (total) cfp8_invalid_counter().fetch_add(total, std::memory_order_relaxed);
  if (amax_out) {
    float m = 0.f;
    for (float p : partial) {
      if (std::isnan(p)) {
        m = p;
        break;
      }
      m = std::max(m, p);
    }
    *amax_out = m;
  }
}
}  // namespace

void f32_to_bf16(const float* src, uint16_t* dst, size_t n) {
  const ConvertFns& fns = convert_fns();
  for_each_chunk(n, kPiece, [&](size_t i, size_t j) { fns.f32_to_bf16(src + i, dst + i, j - i); });
}
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
  f32_to_cfp8_pieces(src, dst, n, fmt, rounding, seed, offset, nullptr);
}

float f32_to_cfp8_amax(const float* src, uint8_t* dst, size_t n, Cfp8Format fmt, Rounding rounding,
                       uint64_t seed, uint64_t offset) {
  float m = 0.f;
  f32_to_cfp8_pieces(src, dst, n, fmt, rounding, seed, offset, &m);
  return m;
}

float f32_to_cfp8_as_bf16_amax(const float* src, uint16_t* dst, size_t n, Cfp8Format fmt) {
  check_cfp8_bias(fmt.bias);
  const ConvertFns& fns = convert_fns();
  const ReduceFns& red = reduce_fns();
  std::vector<size_t> nans(chunk_count(n, kPiece), 0);
  std::vector<float> partial(nans.size(), 0.f);
  for_each_indexed_chunk(n, kPiece, [&](size_t c, size_t i, size_t j) {
#if defined(TESSERA_HAVE_AVX512)
    if (active_isa() >= Isa::avx512) {
      nans[c] = f32_round_cfp8_bf16_avx512(src + i, dst + i, j - i, fmt, &partial[c]);
      return;
    }
#endif
    // Other rungs: through the cfp8 codes, a block at a time.
    constexpr size_t kStep = 1024;
    alignas(64) uint8_t q[kStep];
    for (size_t b = i; b < j; b += kStep) {
      const size_t m = std::min(kStep, j - b);
      nans[c] += fns.f32_to_cfp8_rne(src + b, q, m, fmt);
      fns.cfp8_to_bf16(q, dst + b, m, fmt);
    }
    partial[c] = red.amax(src + i, j - i);
  });
  size_t total = 0;
  float m = 0.f;
  for (size_t c = 0; c < nans.size(); ++c) {
    total += nans[c];
    if (std::isnan(partial[c]) || std::isnan(m)) m = std::numeric_limits<float>::quiet_NaN();
    else m = std::max(m, partial[c]);
  }
  if (total) cfp8_invalid_counter().fetch_add(total, std::memory_order_relaxed);
  return m;
}

void f32_round_to(const float* src, float* dst, size_t n, DType t, Cfp8Format fmt) {
  TESSERA_CHECK_TYPE(t == DType::f32 || t == DType::bf16 || is_cfp8(t), "f32_round_to: ", dtype_name(t),
                     " is not f32, bf16 or cfp8");
  if (t == DType::f32) {
    if (src != dst) std::memmove(dst, src, n * sizeof(float));
    return;
  }
  if (is_cfp8(t)) check_cfp8_bias(fmt.bias);
#if defined(TESSERA_HAVE_AVX512)
  if (active_isa() >= Isa::avx512) {
    if (t == DType::bf16) {
      f32_round_bf16_avx512(src, dst, n);
    } else {
      const size_t nans = f32_round_cfp8_avx512(src, dst, n, fmt);
      if (nans) cfp8_invalid_counter().fetch_add(nans, std::memory_order_relaxed);
    }
    return;
  }
#endif
  // Other rungs: through the narrow type, a block at a time.
  constexpr size_t kStep = 1024;
  alignas(64) uint16_t h[kStep];
  alignas(64) uint8_t q[kStep];
  for (size_t i = 0; i < n; i += kStep) {
    const size_t m = std::min(kStep, n - i);
    if (t == DType::bf16) {
      f32_to_bf16(src + i, h, m);
      bf16_to_f32(h, dst + i, m);
    } else {
      f32_to_cfp8(src + i, q, m, fmt);
      cfp8_to_f32(q, dst + i, m, fmt);
    }
  }
}

}  // namespace tessera::kernels
