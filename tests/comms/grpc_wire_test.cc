// The gRPC transport's chunk encoding (comms/grpc/wire.h) against protobuf's own proto::Chunk:
// the same bytes both ways, payloads across slice boundaries, every truncation, bad input, and
// that sending does not copy the payload.
#include <tessera/comms/crc32.h>
#include <tessera/comms/grpc/transport.h>
#include <tessera/comms/grpc/wire.h>
#include <tessera/core/error.h>
#include <tessera/proto/interconnect.pb.h>

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace tessera::comms::grpc {
namespace {

std::string pattern(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

WireChunk sample(const std::string& payload, const std::string& abort_reason = "") {
  WireChunk c;
  c.src_rank = 3;
  c.dst_rank = 1;
  c.tag = (uint64_t{1} << 40) + 17;  // multi-byte varints
  c.offset = 1 << 20;
  c.total_bytes = (1 << 20) + payload.size();
  c.crc32 = crc32_zlib(0, payload.data(), payload.size());
  c.abort_reason = abort_reason;
  c.data = payload.data();
  c.size = payload.size();
  return c;
}

void expect_same(const WireChunk& w, const proto::Chunk& p) {
  EXPECT_EQ(w.src_rank, p.src_rank());
  EXPECT_EQ(w.dst_rank, p.dst_rank());
  EXPECT_EQ(w.tag, p.tag());
  EXPECT_EQ(w.offset, p.offset());
  EXPECT_EQ(w.total_bytes, p.total_bytes());
  EXPECT_EQ(w.crc32, p.crc32());
  EXPECT_EQ(w.abort_reason, p.abort_reason());
  ASSERT_EQ(w.size, p.payload().size());
  std::string got(w.size, '\0');
  EXPECT_EQ(copy_payload(w, got.data()), crc32_zlib(0, p.payload().data(), p.payload().size()));
  EXPECT_EQ(got, p.payload());
}

// Deserializes bytes delivered as the given slice lengths (the rest as one last slice).
WireChunk decode_sliced(const std::string& bytes, const std::vector<size_t>& cuts) {
  std::vector<::grpc::Slice> slices;
  size_t at = 0;
  for (size_t n : cuts) {
    n = std::min(n, bytes.size() - at);
    slices.emplace_back(bytes.data() + at, n);
    at += n;
  }
  slices.emplace_back(bytes.data() + at, bytes.size() - at);
  ::grpc::ByteBuffer bb(slices.data(), slices.size());
  WireChunk c;
  EXPECT_TRUE((::grpc::SerializationTraits<WireChunk>::Deserialize(&bb, &c).ok()));
  return c;
}

TEST(GrpcWire, EncodingIsAProtobufChunk) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{127}, size_t{128}, size_t{100000}}) {
    for (const char* reason : {"", "rank 3 gave up"}) {
      std::string payload = pattern(n, static_cast<unsigned>(n));
      WireChunk w = sample(payload, reason);
      proto::Chunk p;
      ASSERT_TRUE(p.ParseFromString(encode_for_test(w))) << n;
      WireChunk back = decode_for_test(encode_for_test(w));
      ASSERT_EQ(back.malformed, "");
      expect_same(back, p);
      EXPECT_EQ(p.payload(), payload);
      EXPECT_EQ(p.abort_reason(), reason);
    }
  }
  // All-zero scalars are left out, as proto3 does, and still read back as zero.
  WireChunk z;
  proto::Chunk p;
  ASSERT_TRUE(p.ParseFromString(encode_for_test(z)));
  expect_same(decode_for_test(encode_for_test(z)), p);
}

TEST(GrpcWire, DecodesWhatProtobufWrites) {
  proto::Chunk p;
  p.set_src_rank(2);
  p.set_dst_rank(0);
  p.set_tag(99);
  p.set_offset(4096);
  p.set_total_bytes(8192);
  p.set_payload(pattern(4096, 7));
  p.set_crc32(crc32_zlib(0, p.payload().data(), p.payload().size()));
  std::string bytes = p.SerializeAsString();
  // One slice, tiny slices, and cuts through the key, the length and the payload.
  for (const std::vector<size_t>& cuts : {std::vector<size_t>{}, std::vector<size_t>(bytes.size(), 1),
                                          std::vector<size_t>{1, 2, 3, 5, 8, 13, 2000, 1}, std::vector<size_t>{0, 0, 20}}) {
    WireChunk w = decode_sliced(bytes, cuts);
    ASSERT_EQ(w.malformed, "");
    expect_same(w, p);
  }
}

TEST(GrpcWire, EveryTruncationAgreesWithProtobuf) {
  std::string payload = pattern(300, 1);
  std::string bytes = encode_for_test(sample(payload, "stop"));
  int accepted = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::string prefix = bytes.substr(0, n);
    proto::Chunk p;
    bool ok = p.ParseFromString(prefix);
    WireChunk w = decode_for_test(prefix);
    ASSERT_EQ(ok, w.malformed.empty()) << "prefix of " << n << " bytes: " << w.malformed;
    if (ok) {
      expect_same(w, p);
      ++accepted;
    }
  }
  EXPECT_GT(accepted, 3);  // the prefixes that end at a field boundary
}

TEST(GrpcWire, RejectsWhatIsNotAChunk) {
  auto reason = [](const std::string& bytes) { return decode_for_test(bytes).malformed; };
  EXPECT_NE(reason(std::string("\x0f", 1)), "");                  // wire type 7
  EXPECT_NE(reason(std::string("\x00\x01", 2)), "");              // field number 0
  EXPECT_NE(reason(std::string("\x18\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12)), "");  // 11-byte varint
  EXPECT_NE(reason(std::string("\x32\x05" "abc", 5)), "");        // payload shorter than its length
  EXPECT_NE(reason(std::string("\x32\x01" "a" "\x32\x01" "b", 6)), "");  // two payloads
  // Unknown fields of every wire type are skipped, as protobuf does.
  std::string unknown("\x48\x05" "\x51" "12345678" "\x5d" "1234" "\x62\x02" "ab" "\x18\x07", 22);
  WireChunk w = decode_for_test(unknown);
  EXPECT_EQ(w.malformed, "");
  EXPECT_EQ(w.tag, 7u);
}

// What gRPC is handed to send: the serialized message's slices (references, as gRPC holds them).
std::vector<::grpc::Slice> serialized(const WireChunk& w) {
  ::grpc::ByteBuffer bb;
  bool own = false;
  EXPECT_TRUE((::grpc::SerializationTraits<WireChunk>::Serialize(w, &bb, &own).ok()));
  std::vector<::grpc::Slice> slices;
  EXPECT_TRUE(bb.Dump(&slices).ok());
  return slices;
}

TEST(GrpcWire, SendingReferencesTheCallersBuffer) {
  std::string payload = pattern(1 << 16, 3);
  WireChunk w = sample(payload);
  std::vector<::grpc::Slice> slices = serialized(w);
  ASSERT_EQ(slices.size(), 2u);
  EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()), payload.data());  // no copy
  EXPECT_EQ(slices[1].size(), payload.size());
  // And what it sends is the chunk: parse the slices back.
  std::string joined;
  for (auto& s : slices) joined.append(reinterpret_cast<const char*>(s.begin()), s.size());
  proto::Chunk p;
  ASSERT_TRUE(p.ParseFromString(joined));
  expect_same(decode_for_test(joined), p);
  // copy_payload without a destination only checksums.
  WireChunk back = decode_for_test(joined);
  EXPECT_EQ(copy_payload(back, nullptr), w.crc32);
}

// Eager (small) sends: the same bytes in one slice that gRPC owns, so the caller may reuse its
// buffer as soon as Write returns.
TEST(GrpcWire, EagerSendingCopiesIntoOneOwnedSlice) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{4093}, size_t{1} << 16}) {
    std::string payload = pattern(n, 5);
    WireChunk w = sample(payload);
    w.copy = true;
    std::vector<::grpc::Slice> slices = serialized(w);
    ASSERT_EQ(slices.size(), 1u);
    const char* b = reinterpret_cast<const char*>(slices[0].begin());
    EXPECT_TRUE(b + slices[0].size() <= payload.data() || b >= payload.data() + payload.size() || n == 0)
        << "the slice overlaps the caller's buffer";
    std::string sent(b, slices[0].size());
    for (auto& c : payload) c = static_cast<char>(~c);  // the caller reuses its buffer
    const std::string original = pattern(n, 5);
    proto::Chunk p;
    ASSERT_TRUE(p.ParseFromString(sent));
    EXPECT_EQ(p.payload(), original) << n;
    WireChunk ref = sample(original);  // references `original`, which outlives it
    EXPECT_EQ(sent, encode_for_test(ref)) << n;  // the same bytes as the referencing encoding
  }
}

// A chunk whose bytes stay in the sender's memory: a protobuf Chunk with remote_address,
// remote_bytes and remote_guard set and no payload or crc32; one slice, nothing of the buffer.
TEST(GrpcWire, RemoteChunkCarriesAnAddressNotTheBytes) {
  std::string payload = pattern(3 << 20, 9);
  WireChunk w = sample(payload);
  w.remote = true;
  w.remote_address = reinterpret_cast<uintptr_t>(payload.data());
  w.remote_guard = 0x7fff12345678ull;
  std::vector<::grpc::Slice> slices = serialized(w);
  ASSERT_EQ(slices.size(), 1u);
  EXPECT_LT(slices[0].size(), 100u);  // the header only
  std::string sent(reinterpret_cast<const char*>(slices[0].begin()), slices[0].size());
  proto::Chunk p;
  ASSERT_TRUE(p.ParseFromString(sent));
  EXPECT_EQ(p.remote_address(), w.remote_address);
  EXPECT_EQ(p.remote_bytes(), payload.size());
  EXPECT_EQ(p.remote_guard(), w.remote_guard);
  EXPECT_EQ(p.payload(), "");
  EXPECT_EQ(p.crc32(), 0u);
  EXPECT_EQ(p.tag(), w.tag);
  WireChunk back = decode_for_test(sent);
  ASSERT_EQ(back.malformed, "");
  EXPECT_TRUE(back.remote);
  EXPECT_EQ(back.remote_address, w.remote_address);
  EXPECT_EQ(back.remote_guard, w.remote_guard);
  EXPECT_EQ(back.size, payload.size());
  EXPECT_EQ(back.offset, w.offset);
  // What protobuf writes decodes the same; a payload beside an address is refused, and so are
  // remote fields without the address.
  EXPECT_EQ(decode_for_test(p.SerializeAsString()).remote_address, w.remote_address);
  p.set_payload("x");
  EXPECT_NE(decode_for_test(p.SerializeAsString()).malformed, "");
  proto::Chunk q;
  q.set_remote_bytes(5);
  EXPECT_NE(decode_for_test(q.SerializeAsString()).malformed, "");
}

// read_remote on this very process (process_vm_readv of oneself is always permitted): the bytes
// arrive; an unmapped range, a set guard word and a process that is gone are errors saying so.
TEST(GrpcWire, ReadRemoteCopiesOrSaysWhy) {
  const int self = static_cast<int>(::getpid());
  std::string src = pattern((5 << 20) + 3, 11);
  std::string dst(src.size(), '\0');
  uint64_t guard = 0;
  std::string why;
  ASSERT_TRUE(read_remote(self, reinterpret_cast<uintptr_t>(src.data()), src.size(), dst.data(),
                          reinterpret_cast<uintptr_t>(&guard), why)) << why;
  EXPECT_EQ(dst, src);
  EXPECT_TRUE(read_remote(self, reinterpret_cast<uintptr_t>(src.data()), 0, dst.data(), 0, why));
  guard = 1;  // the sender gave the message up: whatever was read is not delivered
  EXPECT_FALSE(read_remote(self, reinterpret_cast<uintptr_t>(src.data()), 64, dst.data(),
                           reinterpret_cast<uintptr_t>(&guard), why));
  EXPECT_NE(why.find("gave the message up"), std::string::npos) << why;
  EXPECT_FALSE(read_remote(self, 4096, 64, dst.data(), 0, why));  // page 1 is never mapped
  EXPECT_NE(why.find("not readable"), std::string::npos) << why;
  // A child that has exited and been reaped: its pid names no process (until reused).
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_FALSE(read_remote(static_cast<int>(child), reinterpret_cast<uintptr_t>(src.data()), 64, dst.data(), 0, why));
  EXPECT_NE(why.find("gone"), std::string::npos) << why;
}

// The environment a launcher sets: required variables, numbers, and the route for co-located
// peers (TESSERA_GRPC_LOCAL); anything else is a ValueError naming the variable.
TEST(GrpcOptionsFromEnv, ReadsTheLaunchersVariablesAndRejectsBadOnes) {
  ::setenv("TESSERA_RANK", "2", 1);
  ::setenv("TESSERA_WORLD_SIZE", "4", 1);
  ::setenv("TESSERA_COORDINATOR", "127.0.0.1:4567", 1);
  ::setenv("TESSERA_GRPC_CHUNK_BYTES", "65536", 1);
  ::unsetenv("TESSERA_GRPC_LOCAL");
  GrpcOptions o = GrpcOptions::from_env();
  EXPECT_EQ(o.rank, 2);
  EXPECT_EQ(o.world_size, 4);
  EXPECT_EQ(o.coordinator, "127.0.0.1:4567");
  EXPECT_EQ(o.chunk_bytes, 65536u);
  EXPECT_TRUE(o.unix_local);
  EXPECT_TRUE(o.cma_local);  // the default: cma
  ::setenv("TESSERA_GRPC_LOCAL", "tcp", 1);
  EXPECT_FALSE(GrpcOptions::from_env().unix_local);
  EXPECT_FALSE(GrpcOptions::from_env().cma_local);
  ::setenv("TESSERA_GRPC_LOCAL", "unix", 1);
  EXPECT_TRUE(GrpcOptions::from_env().unix_local);
  EXPECT_FALSE(GrpcOptions::from_env().cma_local);
  ::setenv("TESSERA_GRPC_LOCAL", "cma", 1);
  EXPECT_TRUE(GrpcOptions::from_env().unix_local);
  EXPECT_TRUE(GrpcOptions::from_env().cma_local);
  auto message_of = [] {
    try {
      GrpcOptions::from_env();
    } catch (const ValueError& e) {
      return std::string(e.what());
    }
    return std::string("no ValueError");
  };
  ::setenv("TESSERA_GRPC_LOCAL", "shm", 1);
  EXPECT_NE(message_of().find("TESSERA_GRPC_LOCAL='shm'"), std::string::npos) << message_of();
  ::unsetenv("TESSERA_GRPC_LOCAL");
  ::setenv("TESSERA_GRPC_CHUNK_BYTES", "1M", 1);
  EXPECT_NE(message_of().find("TESSERA_GRPC_CHUNK_BYTES"), std::string::npos) << message_of();
  ::unsetenv("TESSERA_GRPC_CHUNK_BYTES");
  ::unsetenv("TESSERA_RANK");
  EXPECT_NE(message_of().find("TESSERA_RANK"), std::string::npos) << message_of();
  for (const char* v : {"TESSERA_WORLD_SIZE", "TESSERA_COORDINATOR"}) ::unsetenv(v);
}

}  // namespace
}  // namespace tessera::comms::grpc
