// zlib's CRC-32 (the IEEE 802.3 polynomial, reflected), as the gRPC transport checksums every
// chunk with it (proto/interconnect.proto). Equal to zlib's crc32() for every input; uses
// carry-less multiplication (PCLMULQDQ folding, Intel's "Fast CRC Computation for Generic
// Polynomials Using PCLMULQDQ") when the CPU has it, zlib otherwise.
//
//   uint32_t c = crc32_update(0, data, n);          // = crc32(0, data, n)
//   c = crc32_update(c, more, m);                   // chained, like zlib
#pragma once

#include <cstddef>
#include <cstdint>

namespace tessera::comms {

uint32_t crc32_update(uint32_t crc, const void* data, size_t n);
// The zlib implementation, always (the reference in tests).
uint32_t crc32_zlib(uint32_t crc, const void* data, size_t n);
// "pclmul" or "zlib".
const char* crc32_impl_name();

}  // namespace tessera::comms
