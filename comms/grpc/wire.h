// grpc/wire.h: the Interconnect stream's chunk (proto::Chunk of proto/interconnect.proto) on the
// wire without protobuf's copies. The bytes are exactly a serialized proto::Chunk, so any
// protobuf peer reads and writes them; what differs is where the payload lives:
//
// - sending, the payload is a view of the caller's buffer: the message is two gRPC slices, the
//   encoded header fields and the payload itself (no copy into a protobuf string, none into a
//   serialization buffer; the kernel's socket copy is the only one);
// - receiving, the message keeps gRPC's read slices (references, no copy) and records where the
//   payload starts; copy_payload() moves it into the destination in one pass that also computes
//   its crc32.
//
//   WireChunk c;  c.tag = 7;  c.data = buf;  c.size = n;  c.crc32 = crc32_update(0, buf, n);
//   stream->Write(c);                       // grpc::SerializationTraits<WireChunk> below
//   ...
//   stream->Read(&c);  if (!c.malformed.empty()) ...;  uint32_t crc = copy_payload(c, dst);
//
// Lifetime: gRPC may hold the payload slice after Write() returns; the transport completes a
// send only when the receiver acknowledges the whole message, by which time every byte has been
// copied into the socket, so the caller's buffer is never read after its send completes. Small
// messages are the exception: with `copy` set, the chunk is serialized into one slice gRPC owns
// (header and payload copied), so their sends may complete as soon as Write() returns.
//
// Between co-located ranks that can read each other's memory (cross-memory attach) a chunk may
// carry no payload but `remote`: where its bytes are in the sender's process (fields 9 and 10);
// the receiver copies them out with read_remote(). Such a chunk has no crc32 (no wire to corrupt
// it); instead remote_guard, when set, is the address of a word in the sender that turns
// non-zero when the sender gives a message up before its ack (error paths), after which its
// buffer may be reused: read_remote() reads it after the bytes and fails if it is set, so a read
// that raced with the reuse is never delivered.
#pragma once

#include <grpcpp/impl/serialization_traits.h>
#include <grpcpp/support/byte_buffer.h>
#include <grpcpp/support/slice.h>
#include <grpcpp/support/status.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::comms::grpc {

struct WireChunk {
  // proto::Chunk's fields (numbers 1-5, 7, 8, 9-12; the payload is field 6).
  uint32_t src_rank = 0;
  uint32_t dst_rank = 0;
  uint64_t tag = 0;
  uint64_t offset = 0;
  uint64_t total_bytes = 0;
  uint32_t crc32 = 0;
  std::string abort_reason;

  // The payload: `size` bytes. Sending: `data` points into the caller's buffer. Received: the
  // payload starts at byte `first_offset` of slices[first_slice] and runs on through the
  // following slices.
  const char* data = nullptr;
  size_t size = 0;
  bool copy = false;  // sending: copy the payload into a gRPC-owned slice instead of referencing it
  // The bytes are not in the message but at remote_address in the sender's process (size bytes).
  bool remote = false;
  uint64_t remote_address = 0;
  uint64_t remote_guard = 0;  // 0: none
  uint64_t seq = 0;           // the message's number on its stream (field 12)
  std::vector<::grpc::Slice> slices;
  size_t first_slice = 0;
  size_t first_offset = 0;

  // Received bytes that are not a Chunk: why (the other fields are then unreliable).
  std::string malformed;

  // Calls fn(const char* p, size_t n) over the received payload's pieces in order.
  template <typename F>
  void for_each_piece(F&& fn) const {
    size_t left = size, off = first_offset;
    for (size_t i = first_slice; left > 0 && i < slices.size(); ++i, off = 0) {
      size_t n = std::min(left, slices[i].size() - off);
      fn(reinterpret_cast<const char*>(slices[i].begin()) + off, n);
      left -= n;
    }
  }
};

// Copies the received payload to dst (nullptr: nowhere) and returns its crc32 (zlib's), in one
// pass over cache-sized blocks.
uint32_t copy_payload(const WireChunk& c, char* dst);

// Copies n bytes at `address` in process `pid` to dst (cross-memory attach, process_vm_readv(2)),
// then checks the word at `guard` (if not 0) is still zero. Returns false, with `error` saying
// why, if the process is gone, a range is not readable, the kernel refuses or the guard is set.
bool read_remote(int pid, uint64_t address, size_t n, char* dst, uint64_t guard, std::string& error);

// The encoding of a chunk, header and payload, as one string (tests; the transport sends slices).
std::string encode_for_test(const WireChunk& c);
// Parses bytes as a received chunk (tests; the transport parses gRPC's slices in place).
WireChunk decode_for_test(const std::string& bytes);

}  // namespace tessera::comms::grpc

namespace grpc {

template <>
class SerializationTraits<tessera::comms::grpc::WireChunk, void> {
 public:
  static Status Serialize(const tessera::comms::grpc::WireChunk& c, ByteBuffer* bb, bool* own_buffer);
  // Never fails: bytes that are not a Chunk come back with `malformed` set, so the transport can
  // name the sender in its error instead of seeing a broken stream.
  static Status Deserialize(ByteBuffer* bb, tessera::comms::grpc::WireChunk* c);
};

}  // namespace grpc
