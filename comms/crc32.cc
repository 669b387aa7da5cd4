#include <tessera/comms/crc32.h>

#include <zlib.h>

#include <algorithm>

namespace tessera::comms {

namespace detail {
// crc32_pclmul.cc: folds a multiple of 16 bytes, at least 64; zlib-convention crc in and out.
uint32_t crc32_pclmul_blocks(uint32_t crc, const unsigned char* p, size_t n);
// crc32_vpclmul.cc (when built): the same with 512-bit folding; a multiple of 16, at least 256.
uint32_t crc32_vpclmul_blocks(uint32_t crc, const unsigned char* p, size_t n);
}

uint32_t crc32_zlib(uint32_t crc, const void* data, size_t n) {
  uLong c = crc;
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {  // zlib takes uInt lengths
    uInt k = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, p, k);
    p += k;
    n -= k;
  }
  return static_cast<uint32_t>(c);
}

namespace {
bool have_pclmul() {
  static const bool yes = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  return yes;
}
bool have_vpclmul() {
#if defined(TESSERA_CRC32_VPCLMUL)
  static const bool yes = have_pclmul() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("vpclmulqdq");
  return yes;
#else
  return false;
#endif
}
}  // namespace

const char* crc32_impl_name() { return have_vpclmul() ? "vpclmulqdq" : have_pclmul() ? "pclmul" : "zlib"; }

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  if (n < 256 || !have_pclmul()) return crc32_zlib(crc, p, n);
  size_t bulk = n & ~size_t{15};
#if defined(TESSERA_CRC32_VPCLMUL)
  if (bulk >= 1024 && have_vpclmul()) {
    crc = detail::crc32_vpclmul_blocks(crc, p, bulk);
    return crc32_zlib(crc, p + bulk, n - bulk);
  }
#endif
  crc = detail::crc32_pclmul_blocks(crc, p, bulk);
  return crc32_zlib(crc, p + bulk, n - bulk);
}

}  // namespace tessera::comms
