// The transport interface: non-blocking point-to-point messages between ranks.
//
//   std::shared_ptr<Transport> t = ...;               // loopback/, mpi/ or grpc/transport.h
//   auto r = t->irecv(/*peer=*/1, /*tag=*/7, buf, n);
//   auto s = t->isend(/*peer=*/1, /*tag=*/7, data, n);
//   if (!r->wait(deadline_after(std::chrono::seconds(5)))) ... timed out ...
//
// Contract, the same for every backend (Gloo's transport layout: loopback/, mpi/ and grpc/
// each implement transport.{h,cc}):
// - Matching is by (peer, tag) and in order: the k-th send to a peer with a tag matches the
//   k-th receive posted for that peer and tag (MPI's non-overtaking rule). Sizes must agree;
//   a mismatch fails the receive with RemoteError. loopback and grpc fail the send too unless
//   it had completed already (sent eagerly, or its bytes held by the receiver before the
//   receive was posted); MPI fails the sender only for a direct send from its shared memory
//   (mpi/transport.h).
// - Progress: a large send may complete only when the receiver tests or waits on the matching
//   receive (a rendezvous: gRPC's large messages, the mpi transport's direct sends). Post your
//   receives before you block on your sends.
// - Buffers belong to the caller and must stay valid and untouched until the request
//   completes (wait() returned true or test() returned true).
// - A send may complete before the receiver has the data (once the buffer is reusable).
// - wait(deadline) returns false if the deadline passed first; the request is then still
//   pending and the caller is expected to fail the operation (comms/fabric.h turns this into a
//   TimeoutError naming the peer and the operation). wait() and test() throw NetworkError when
//   the peer is gone, RemoteError when it reported an error or aborted, CommError after abort().
// - abort(reason) fails every pending and future request of this transport and tells peers
//   where the backend can (loopback, grpc). After any CommError a transport is in an unknown
//   state (Gloo's rule): destroy it and build a new one.
// - Thread safety: every method may be called from several threads at once.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace tessera::comms {

// The default deadline of a blocking communication call: TESSERA_COMM_TIMEOUT_MS if set
// (ValueError if it is not a positive integer), else 60 s. Communicators, the mpi transport's
// start-up and `tessera launch` (how long to wait for ranks to report a failure) use it.
std::chrono::milliseconds default_comm_timeout();

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline deadline_after(std::chrono::nanoseconds d) { return Clock::now() + d; }

class Request {
 public:
  virtual ~Request() = default;
  // Blocks until the request completes (true) or the deadline passes (false).
  virtual bool wait(Deadline deadline) = 0;
  // Non-blocking: true once complete.
  virtual bool test() = 0;
};
using RequestPtr = std::unique_ptr<Request>;

// Communication memory from Transport::allocate_shared: page-aligned, zero-filled, bytes() long.
class SharedMemory {
 public:
  virtual ~SharedMemory() = default;
  virtual void* data() const = 0;
  virtual size_t bytes() const = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* name() const = 0;  // "loopback", "mpi", "grpc"
  // Largest tag value this transport carries (MPI: MPI_TAG_UB).
  virtual uint64_t max_tag() const = 0;

  virtual RequestPtr isend(int peer, uint64_t tag, const void* data, size_t bytes) = 0;
  virtual RequestPtr irecv(int peer, uint64_t tag, void* data, size_t bytes) = 0;

  // A receive whose bytes are handed to `consume` once, when the request completes (inside the
  // wait() or test() that returns true), where they lie: in `buf`, received as by irecv, or,
  // where the transport can, straight in the sender's memory, with no copy (the mpi transport,
  // for sends from its shared memory). The bytes are valid only during the call. A reduction
  // reads its operand this way (ring reduce-scatter).
  using Consume = std::function<void(const void* bytes)>;
  virtual RequestPtr irecv_consume(int peer, uint64_t tag, void* buf, size_t bytes, Consume consume);

  // Memory for communication buffers (gradient buckets, benchmark buffers). Every rank calls it
  // in the same order: for the mpi transport it is collective over the ranks of a host, whose
  // sends from it are read in place by co-located receivers (mpi/transport.h); OutOfMemoryError
  // there reaches every rank of the host alike. Elsewhere it is private memory.
  virtual std::shared_ptr<SharedMemory> allocate_shared(size_t bytes);

  virtual void abort(const std::string& reason) = 0;

  // How errors name a peer: "rank 3", or "rank 3 (127.0.0.1:4567)".
  virtual std::string peer_name(int peer) const { return "rank " + std::to_string(peer); }

  // Rough cost of one message between ranks: alpha (s) + bytes / beta (bytes/s). The collective
  // cost model (comms/cost_model.h) uses it to choose algorithms.
  virtual double alpha() const = 0;
  virtual double beta() const = 0;

  // The collectives' default pipelining segment over this transport (MeshComm uses it unless
  // told otherwise): small enough to overlap transfer and reduction, large enough to amortize
  // the cost of a message.
  virtual size_t segment_bytes() const { return size_t{1} << 20; }
};

// Private, page-aligned, zero-filled memory: the default allocate_shared.
std::shared_ptr<SharedMemory> allocate_private(size_t bytes);

inline std::shared_ptr<SharedMemory> Transport::allocate_shared(size_t bytes) { return allocate_private(bytes); }

// Completes `inner` (a receive into `buf`), then calls consume(buf) once: the default
// irecv_consume, and the fabric's for nodes of one rank.
RequestPtr consume_on_completion(RequestPtr inner, const void* buf, Transport::Consume consume);

inline RequestPtr Transport::irecv_consume(int peer, uint64_t tag, void* buf, size_t bytes, Consume consume) {
  return consume_on_completion(irecv(peer, tag, buf, bytes), buf, std::move(consume));
}

}  // namespace tessera::comms
