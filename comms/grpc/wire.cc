#include <tessera/comms/grpc/wire.h>
#include <tessera/comms/crc32.h>

#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tessera::comms::grpc {

namespace {

// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/): a key is
// (field << 3) | wire type; the types used here are varint (0), 64-bit (1), length-delimited
// (2) and 32-bit (5).
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };
enum Field : uint32_t {
  kSrc = 1, kDst = 2, kTag = 3, kOffset = 4, kTotal = 5, kPayload = 6, kCrc = 7, kAbort = 8,
  kRemoteAddress = 9, kRemoteBytes = 10, kRemoteGuard = 11, kSeq = 12
};

void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}
void put_key(std::string& s, Field f, WireType t) { put_varint(s, (uint64_t{f} << 3) | t); }

// Everything before the payload bytes: the scalar fields, the abort reason, the payload's key
// and length.
std::string encode_header(const WireChunk& c) {
  std::string h;
  h.reserve(64 + c.abort_reason.size());
  for (auto [f, v] : {std::pair{kSrc, uint64_t{c.src_rank}}, {kDst, uint64_t{c.dst_rank}}, {kTag, c.tag},
                      {kOffset, c.offset}, {kTotal, c.total_bytes}, {kSeq, c.seq}}) {
    if (v == 0) continue;  // proto3 leaves zero scalars out
    put_key(h, f, kVarint);
    put_varint(h, v);
  }
  auto fixed64 = [&](Field f, uint64_t v) {
    put_key(h, f, kFixed64);
    for (int i = 0; i < 8; ++i) h.push_back(static_cast<char>(v >> (8 * i)));
  };
  if (!c.remote) {
    put_key(h, kCrc, kFixed32);
    for (int i = 0; i < 4; ++i) h.push_back(static_cast<char>(c.crc32 >> (8 * i)));
  }
  if (!c.abort_reason.empty()) {
    put_key(h, kAbort, kLen);
    put_varint(h, c.abort_reason.size());
    h += c.abort_reason;
  }
  if (c.remote) {
    fixed64(kRemoteAddress, c.remote_address);
    if (c.size > 0) {
      put_key(h, kRemoteBytes, kVarint);
      put_varint(h, c.size);
    }
    if (c.remote_guard) fixed64(kRemoteGuard, c.remote_guard);
  } else if (c.size > 0) {
    put_key(h, kPayload, kLen);
    put_varint(h, c.size);
  }
  return h;
}

// Reads protobuf fields from a sequence of slices without joining them.
class Cursor {
 public:
  explicit Cursor(const std::vector<::grpc::Slice>& s) : s_(s) { skip_empty(); }
  bool at_end() const { return i_ >= s_.size(); }
  size_t slice() const { return i_; }
  size_t offset() const { return off_; }

  bool byte(uint8_t& b) {
    if (at_end()) return false;
    b = s_[i_].begin()[off_];
    advance(1);
    return true;
  }
  bool varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!byte(b)) return false;
      v |= uint64_t{b & 0x7fu} << shift;
      if (!(b & 0x80)) return true;
    }
    return false;  // more than 10 bytes
  }
  bool fixed(uint64_t& v, int bytes) {
    v = 0;
    for (int i = 0; i < bytes; ++i) {
      uint8_t b;
      if (!byte(b)) return false;
      v |= uint64_t{b} << (8 * i);
    }
    return true;
  }
  // Skips n bytes; false if fewer remain.
  bool skip(uint64_t n) {
    while (n > 0) {
      if (at_end()) return false;
      size_t here = std::min<uint64_t>(n, s_[i_].size() - off_);
      advance(here);
      n -= here;
    }
    return true;
  }
  bool copy(std::string& out, uint64_t n) {
    out.clear();
    while (n > 0) {
      if (at_end()) return false;
      size_t here = std::min<uint64_t>(n, s_[i_].size() - off_);
      out.append(reinterpret_cast<const char*>(s_[i_].begin()) + off_, here);
      advance(here);
      n -= here;
    }
    return true;
  }

 private:
  void advance(size_t n) {
    off_ += n;
    if (off_ == s_[i_].size()) {
      ++i_;
      off_ = 0;
      skip_empty();
    }
  }
  void skip_empty() {
    while (i_ < s_.size() && s_[i_].size() == 0) ++i_;
  }
  const std::vector<::grpc::Slice>& s_;
  size_t i_ = 0, off_ = 0;
};

// Fills c from c.slices; returns "" or what is wrong.
std::string parse(WireChunk& c) {
  Cursor in(c.slices);
  bool payload_seen = false, remote_bytes_seen = false;
  uint64_t remote_bytes = 0;
  while (!in.at_end()) {
    uint64_t key, v;
    if (!in.varint(key)) return "truncated field key";
    const uint64_t field = key >> 3, type = key & 7;
    if (field == 0) return "field number 0";
    switch (type) {
      case kVarint:
        if (!in.varint(v)) return "truncated varint (field " + std::to_string(field) + ")";
        if (field == kSrc) c.src_rank = static_cast<uint32_t>(v);
        else if (field == kDst) c.dst_rank = static_cast<uint32_t>(v);
        else if (field == kTag) c.tag = v;
        else if (field == kOffset) c.offset = v;
        else if (field == kTotal) c.total_bytes = v;
        else if (field == kRemoteBytes) remote_bytes = v, remote_bytes_seen = true;
        else if (field == kSeq) c.seq = v;
        break;
      case kFixed64:
        if (!in.fixed(v, 8)) return "truncated 64-bit field " + std::to_string(field);
        if (field == kRemoteAddress) c.remote_address = v, c.remote = true;
        else if (field == kRemoteGuard) c.remote_guard = v;
        break;
      case kFixed32:
        if (!in.fixed(v, 4)) return "truncated 32-bit field " + std::to_string(field);
        if (field == kCrc) c.crc32 = static_cast<uint32_t>(v);
        break;
      case kLen: {
        uint64_t n;
        if (!in.varint(n)) return "truncated length (field " + std::to_string(field) + ")";
        if (field == kPayload) {
          if (payload_seen) return "two payloads in one chunk";  // protobuf would concatenate
          payload_seen = true;
          c.first_slice = in.slice();
          c.first_offset = in.offset();
          c.size = static_cast<size_t>(n);
          if (!in.skip(n)) return "payload of " + std::to_string(n) + " bytes is truncated";
        } else if (field == kAbort) {
          if (n > (1u << 20)) return "abort reason of " + std::to_string(n) + " bytes";
          if (!in.copy(c.abort_reason, n)) return "truncated abort reason";
        } else if (!in.skip(n)) {
          return "truncated field " + std::to_string(field);
        }
        break;
      }
      default:
        return "wire type " + std::to_string(type) + " (field " + std::to_string(field) + ")";
    }
  }
  if ((remote_bytes_seen || c.remote_guard) && !c.remote) return "remote_bytes or remote_guard without remote_address";
  if (c.remote) {
    if (payload_seen) return "both a payload and a remote address";
    c.size = static_cast<size_t>(remote_bytes);
  }
  return "";
}

}  // namespace

uint32_t copy_payload(const WireChunk& c, char* dst) {
  constexpr size_t kBlock = 16 << 10;  // copy a block, then checksum it while it is in L1
  uint32_t crc = 0;
  c.for_each_piece([&](const char* p, size_t n) {
    for (size_t o = 0; o < n; o += kBlock) {
      size_t m = std::min(kBlock, n - o);
      if (dst) {
        std::memcpy(dst, p + o, m);
        crc = crc32_update(crc, dst, m);
        dst += m;
      } else {
        crc = crc32_update(crc, p + o, m);
      }
    }
  });
  return crc;
}

namespace {
// One process_vm_readv(2) of [address, address + n) in `pid` into dst, whole or an error.
bool read_range(int pid, uint64_t address, size_t n, char* dst, std::string& error) {
  size_t done = 0;
  while (done < n) {
    iovec local{dst + done, n - done};
    iovec remote{reinterpret_cast<void*>(static_cast<uintptr_t>(address + done)), n - done};
    ssize_t got = ::process_vm_readv(pid, &local, 1, &remote, 1, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int e = got < 0 ? errno : EFAULT;
      error = std::string(e == ESRCH ? "the process is gone" : e == EFAULT ? "its memory is not readable there"
                                                                            : "the kernel refuses") +
              " (process_vm_readv of " + std::to_string(n - done) + " bytes: " + std::strerror(e) + ")";
      return false;
    }
    done += static_cast<size_t>(got);
  }
  return true;
}
}  // namespace

bool read_remote(int pid, uint64_t address, size_t n, char* dst, uint64_t guard, std::string& error) {
  if (!read_range(pid, address, n, dst, error)) return false;
  if (!guard) return true;
  uint64_t given_up = 0;
  if (!read_range(pid, guard, sizeof given_up, reinterpret_cast<char*>(&given_up), error)) return false;
  if (given_up) {
    error = "the sender gave the message up while it was being read";
    return false;
  }
  return true;
}

std::string encode_for_test(const WireChunk& c) {
  return encode_header(c) + (c.remote ? std::string() : std::string(c.data, c.size));
}

WireChunk decode_for_test(const std::string& bytes) {
  ::grpc::Slice s(bytes.data(), bytes.size());
  ::grpc::ByteBuffer bb(&s, 1);
  WireChunk c;
  (void)::grpc::SerializationTraits<WireChunk>::Deserialize(&bb, &c);
  return c;
}

}  // namespace tessera::comms::grpc

namespace grpc {

Status SerializationTraits<tessera::comms::grpc::WireChunk, void>::Serialize(
    const tessera::comms::grpc::WireChunk& c, ByteBuffer* bb, bool* own_buffer) {
  std::string h = tessera::comms::grpc::encode_header(c);
  if (c.remote) {  // the header says where the bytes are; the receiver reads them from there
    Slice one(h.data(), h.size());
    ByteBuffer out(&one, 1);
    bb->Swap(&out);
    *own_buffer = true;
    return Status::OK;
  }
  if (c.copy) {
    Slice one(h.size() + c.size);  // gRPC-owned: the caller's buffer is free once Write returns
    auto* p = const_cast<uint8_t*>(one.begin());
    std::memcpy(p, h.data(), h.size());
    if (c.size) std::memcpy(p + h.size(), c.data, c.size);
    ByteBuffer out(&one, 1);
    bb->Swap(&out);
    *own_buffer = true;
    return Status::OK;
  }
  Slice parts[2] = {Slice(h.data(), h.size()),
                    // The caller's bytes, referenced, not copied (see the lifetime note in wire.h).
                    Slice(c.data, c.size, Slice::STATIC_SLICE)};
  ByteBuffer out(parts, c.size > 0 ? 2 : 1);
  bb->Swap(&out);
  *own_buffer = true;
  return Status::OK;
}

Status SerializationTraits<tessera::comms::grpc::WireChunk, void>::Deserialize(
    ByteBuffer* bb, tessera::comms::grpc::WireChunk* c) {
  *c = tessera::comms::grpc::WireChunk{};
  Status st = bb->Dump(&c->slices);
  bb->Clear();
  if (!st.ok()) {
    c->malformed = "unreadable message: " + st.error_message();
    return Status::OK;
  }
  c->malformed = tessera::comms::grpc::parse(*c);
  return Status::OK;
}

}  // namespace grpc
