// CRC-32 folding with VPCLMULQDQ on 512-bit registers (compiled with -mavx512f -mvpclmulqdq
// -mpclmul -msse4.1; called only when the CPU has them): four zmm accumulators fold 256 bytes per
// step, four times the bytes of crc32_pclmul.cc's loop for the same dependency chain. The
// constants are those of crc32_pclmul.cc for a 2048-bit fold distance (x^2080 and x^2016 mod P,
// bit-reflected, as Intel's white paper derives R1/R2 for 512 bits); the accumulators then
// fold into one 128-bit lane with crc32_pclmul.cc's own constants and finish there.
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

namespace tessera::comms::detail {

uint32_t crc32_pclmul_finish(__m128i x1, const unsigned char* p, size_t n);

uint32_t crc32_vpclmul_blocks(uint32_t crc, const unsigned char* p, size_t n) {
  // n: a multiple of 16, at least 256.
  // (_mm512_set_epi64 rather than a broadcast: GCC 12 warns about the broadcast's undefined
  // source operand.)
  const __m512i k256 = _mm512_set_epi64(0x1322d1430, 0x11542778a, 0x1322d1430, 0x11542778a, 0x1322d1430,
                                        0x11542778a, 0x1322d1430, 0x11542778a);  // 2048-bit distance
  const __m512i k64 = _mm512_set_epi64(0x1c6e41596, 0x154442bd4, 0x1c6e41596, 0x154442bd4, 0x1c6e41596,
                                       0x154442bd4, 0x1c6e41596, 0x154442bd4);  // 512-bit
  auto load = [](const unsigned char* q) { return _mm512_loadu_si512(q); };
  auto fold = [](__m512i x, __m512i k) {
    return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
  };
  __m512i x1 = _mm512_xor_si512(load(p), _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(~crc))));
  __m512i x2 = load(p + 64), x3 = load(p + 128), x4 = load(p + 192);
  p += 256;
  n -= 256;
  while (n >= 256) {
    x1 = _mm512_xor_si512(fold(x1, k256), load(p));
    x2 = _mm512_xor_si512(fold(x2, k256), load(p + 64));
    x3 = _mm512_xor_si512(fold(x3, k256), load(p + 128));
    x4 = _mm512_xor_si512(fold(x4, k256), load(p + 192));
    p += 256;
    n -= 256;
  }
  // Four zmm (256 bytes) -> one zmm (the last 64 bytes), then its four 128-bit lanes -> one.
  x2 = _mm512_xor_si512(fold(x1, k64), x2);
  x3 = _mm512_xor_si512(fold(x2, k64), x3);
  x4 = _mm512_xor_si512(fold(x3, k64), x4);
  const __m128i k3k4 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0);  // 128-bit distance
  auto fold128 = [&](__m128i x) {
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k3k4, 0x00), _mm_clmulepi64_si128(x, k3k4, 0x11));
  };
  alignas(64) __m128i lane[4];
  _mm512_store_si512(lane, x4);
  __m128i y = lane[0];
  y = _mm_xor_si128(fold128(y), lane[1]);
  y = _mm_xor_si128(fold128(y), lane[2]);
  y = _mm_xor_si128(fold128(y), lane[3]);
  return crc32_pclmul_finish(y, p, n);
}

}  // namespace tessera::comms::detail
