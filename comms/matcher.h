// In-order matching of posted sends and receives inside one process, completed by memcpy.
// The loopback transport (ranks as threads) and the fabric's exchange between nodes hosted by
// the same rank both use it.
//
//   auto m = std::make_shared<Matcher>();
//   RequestPtr r = m->post_recv({/*src=*/1, /*tag=*/7}, buf, n);
//   RequestPtr s = m->post_send({1, 7}, data, n);    // matches r: copies, completes both
//
// Matching follows the transport contract (comms/transport.h): per key, the k-th send meets
// the k-th receive. A send waits for its receive (no buffering): its buffer is read by the
// thread that makes the match. Destroying a pending request withdraws it; destroying one
// whose copy is in flight waits for the copy. Thread-safe.
#pragma once

#include <tessera/comms/transport.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace tessera::comms {

enum class FailKind : uint8_t { network, remote, comm };
struct Failure {
  FailKind kind = FailKind::comm;
  std::string message;
};
[[noreturn]] void throw_failure(const Failure& f);

class Matcher : public std::enable_shared_from_this<Matcher> {
 public:
  struct Key {
    uint64_t src = 0;
    uint64_t tag = 0;
    friend bool operator==(const Key& a, const Key& b) { return a.src == b.src && a.tag == b.tag; }
  };

  RequestPtr post_send(Key key, const void* data, size_t bytes);
  RequestPtr post_recv(Key key, void* data, size_t bytes);

  // Fails the queued operations whose key.src is `src` and refuses future ones.
  void fail_source(uint64_t src, const Failure& f);
  // Fails everything queued and refuses everything posted from now on.
  void close(const Failure& f);

  struct Op;  // one posted send or receive (matcher.cc)

 private:
  friend class MatchRequest;
  struct KeyHash {
    size_t operator()(const Key& k) const { return std::hash<uint64_t>()(k.src * 0x9e3779b97f4a7c15ull ^ k.tag); }
  };
  struct Queues {
    std::deque<std::shared_ptr<Op>> sends, recvs;
  };
  RequestPtr post(Key key, bool is_send, const void* src, void* dst, size_t bytes);
  void withdraw(const Key& key, const std::shared_ptr<Op>& op);

  std::mutex mu_;
  std::unordered_map<Key, Queues, KeyHash> queues_;
  std::unordered_map<uint64_t, Failure> dead_sources_;
  std::optional<Failure> closed_;
};

}  // namespace tessera::comms
