// Vectorized bulk dtype conversions on raw buffers. Results equal the scalar references in
// core/bf16.h and core/cfp8.h bit for bit, at every ISA rung.
//
//   kernels::f32_to_bf16(x.data(), b.data(), n);
//   kernels::f32_to_cfp8(x.data(), c.data(), n, {Cfp8Layout::e4m3, 7}, Rounding::stochastic,
//                        /*seed=*/42, /*offset=*/0);
//
// Large inputs are converted in fixed pieces on the oneTBB arena's threads (the bytes do not
// depend on the thread count). Buffers must not overlap. Stochastic rounding of element i uses the counter-based stream
// cfp8_sr_bits(cfp8_sr_key(seed, (offset + i) >> 32), offset + i), so a tensor converted in
// pieces (with the right offsets) or in parallel gives the same bytes as in one call.
// NaN inputs to the cfp8 encoders are added to cfp8_invalid_counter().
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>
#include <tessera/kernels/cpu.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels {

void f32_to_bf16(const float* src, uint16_t* dst, size_t n);
void bf16_to_f32(const uint16_t* src, float* dst, size_t n);
void f32_to_cfp8(const float* src, uint8_t* dst, size_t n, Cfp8Format fmt,
                 Rounding rounding = Rounding::nearest_even, uint64_t seed = 0,
                 uint64_t offset = 0);
// f32_to_cfp8 that also returns amax(src) (reduce.h: max |x|, NaN if any is NaN), scanning
// each piece of src right after converting it, while it is in cache: what a caller that picks
// the bias from a history of amax (core/precision.h) needs, in one pass over memory.
float f32_to_cfp8_amax(const float* src, uint8_t* dst, size_t n, Cfp8Format fmt,
                       Rounding rounding = Rounding::nearest_even, uint64_t seed = 0,
                       uint64_t offset = 0);
// bf16 holding the nearest cfp8 value of each src element (round to nearest even, as
// f32_to_cfp8; exact, since every cfp8 value is a bf16 value): cfp8_to_bf16(f32_to_cfp8(x)) in
// one pass, returning amax(src). For GEMM operands on CPUs whose GEMM widens narrow types to f32
// anyway: packing bf16 needs no table decode. NaN -> +0 (counted in cfp8_invalid_count()).
float f32_to_cfp8_as_bf16_amax(const float* src, uint16_t* dst, size_t n, Cfp8Format fmt);
void cfp8_to_f32(const uint8_t* src, float* dst, size_t n, Cfp8Format fmt);
void cfp8_to_bf16(const uint8_t* src, uint16_t* dst, size_t n, Cfp8Format fmt);

// src -> dst (both f32) holding the nearest value of type t (bf16, or cfp8 in `fmt`; f32
// copies): what converting to t and back gives, bit for bit, in one pass. NaN follows the
// encoders (bf16: quiet NaN; cfp8: +0, counted in cfp8_invalid_count()). src may equal dst.
void f32_round_to(const float* src, float* dst, size_t n, DType t, Cfp8Format fmt = {});

// One rung's implementations. Stochastic encoders take the 32-bit key and the index of src[0]
// within the key's 2^32-element block; the dispatcher splits calls at block boundaries.
struct ConvertFns {
  void (*f32_to_bf16)(const float*, uint16_t*, size_t);
  void (*bf16_to_f32)(const uint16_t*, float*, size_t);
  // Returns the number of NaN inputs.
  size_t (*f32_to_cfp8_rne)(const float*, uint8_t*, size_t, Cfp8Format);
  size_t (*f32_to_cfp8_sr)(const float*, uint8_t*, size_t, Cfp8Format, uint32_t key,
                           uint32_t index0);
  void (*cfp8_to_f32)(const uint8_t*, float*, size_t, Cfp8Format);
  void (*cfp8_to_bf16)(const uint8_t*, uint16_t*, size_t, Cfp8Format);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const ConvertFns* convert_fns_scalar();
const ConvertFns* convert_fns_avx2();
const ConvertFns* convert_fns_avx512();
// The table dispatch picks for the current active_isa().
const ConvertFns& convert_fns();
const char* convert_impl_name();

}  // namespace tessera::kernels
