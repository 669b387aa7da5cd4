// The chunk checksum equals zlib's crc32 for every length and alignment, chained or not.
#include <tessera/comms/crc32.h>

#include <gtest/gtest.h>
#include <zlib.h>

#include <random>
#include <vector>

namespace tessera::comms {
namespace {

TEST(Crc32, EqualsZlibForEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<unsigned char> b(70000);
  for (auto& c : b) c = static_cast<unsigned char>(rng());
  for (size_t n = 0; n < 2100; ++n) {
    for (size_t off : {0, 1, 7, 13}) {
      uint32_t seed = static_cast<uint32_t>(n * 2654435761u);
      ASSERT_EQ(crc32_update(seed, b.data() + off, n), crc32(seed, b.data() + off, static_cast<uInt>(n)))
          << "n=" << n << " offset=" << off << " (" << crc32_impl_name() << ")";
    }
  }
  EXPECT_EQ(crc32_update(0, b.data(), b.size()), crc32_zlib(0, b.data(), b.size()));
  uint32_t chained = crc32_update(crc32_update(0, b.data(), 1000), b.data() + 1000, b.size() - 1000);
  EXPECT_EQ(chained, crc32_zlib(0, b.data(), b.size()));
  EXPECT_EQ(crc32_update(0, "123456789", 9), 0xcbf43926u);  // the CRC-32 check value
  // Long inputs (many 256-byte folding steps of the 512-bit path) at odd lengths and offsets.
  for (size_t n : {size_t{4096}, size_t{4096 + 15}, size_t{65536 + 7}, size_t{69000}}) {
    for (size_t off : {0, 3}) {
      ASSERT_EQ(crc32_update(0x12345678u, b.data() + off, n), crc32_zlib(0x12345678u, b.data() + off, n))
          << "n=" << n << " offset=" << off << " (" << crc32_impl_name() << ")";
    }
  }
  RecordProperty("impl", crc32_impl_name());
}

}  // namespace
}  // namespace tessera::comms
