// grpc: the Interconnect streaming service of proto/interconnect.proto, for clusters without
// MPI. Every rank serves Interconnect; rank 0 also serves the Coordinator, where every rank
// says hello and learns every other rank's address (rendezvous).
//
//   grpc::GrpcOptions o = grpc::GrpcOptions::from_env();   // TESSERA_RANK, TESSERA_WORLD_SIZE,
//                                                          // TESSERA_COORDINATOR=127.0.0.1:PORT
//   auto t = std::make_shared<grpc::GrpcTransport>(o);     // blocks until all ranks said hello
//
// Wire: one client stream (Exchange) per ordered pair of ranks carries that sender's messages
// in posting order, each as chunks of at most chunk_bytes with a zlib crc32 per chunk; the
// receiver acknowledges every whole message on the same stream (naming it by its number, so a
// message of the wrong size for its receive is refused and its send fails too). A send of more
// than 256 KiB completes when its acknowledgement arrives, i.e. when the receiver holds the whole
// message (a message that arrives before its receive is posted is held in a buffer);
// a smaller one is copied into gRPC's buffers and completes once gRPC has it (eager, as MPI
// sends small messages), which saves a round trip per step of a small collective. So, as with
// MPI, a rank can finish a collective before its peers have received its last small messages:
// if it is then killed, they fail that collective with NetworkError; destroying the transport
// (normal exit) waits until every peer has read everything sent to it (at most 2 s). Maximum message
// sizes are set explicitly on the server and on every channel (one chunk plus framing).
// Addresses: the service binds 127.0.0.1 (ephemeral port; rank 0: the coordinator's port)
// unless bind_host says otherwise (env TESSERA_BIND_HOST). Ranks on the same host (same boot id
// and network namespace) reach each other over a Unix-domain socket in the abstract namespace
// instead: the same gRPC service and HTTP/2 stream over a cheaper kernel path (about half the
// kernel CPU per byte of TCP loopback), with socket buffers of socket_buffer_bytes. Every other
// peer, and every peer when unix_local is false (env TESSERA_GRPC_LOCAL=tcp), is reached by TCP.
// Co-located ranks go one step further by default (cma_local, TESSERA_GRPC_LOCAL=cma): a message
// above 256 KiB travels as one chunk carrying only its address in the sender's memory, and the
// receiver copies it from there with process_vm_readv(2) (one copy instead of three, as OpenMPI's
// shared-memory transport does between ranks of a node) straight into the receive's buffer: at
// once if the receive is posted, else when irecv() posts it (irecv() then does the copy and
// writes the ack itself). Header, ordering, acknowledgement and failure handling stay on the
// stream, which still carries every small message; such chunks have no crc32 (no wire). Each
// rank first proves it can read each peer (a probe word, read at rendezvous; a second
// coordinator round tells every sender which receivers can read it), so a container or kernel
// that forbids it just leaves those pairs on the socket. Offering CMA calls
// prctl(PR_SET_PTRACER_ANY), as OpenMPI does, so that Yama (ptrace_scope 1) lets same-user peers
// read this process. On this route a large send is a rendezvous, as MPI's large messages are:
// it completes once the receiver has posted its receive and copied the bytes, so a rank that
// waits for such a send before posting the receive its peer waits for deadlocks (until the
// deadline) where a socket route would have buffered. A send completes on the receiver's ack, so
// its buffer is never read after it completes; a send given up before that (its request
// destroyed on an error path) sets a guard word in the sender that every read checks after
// copying, and cancels the stream, so a read that raced with the buffer's reuse is refused.
//
// Threads: one, "tsr-progress", drives every stream of the transport through gRPC's
// asynchronous API on one completion queue (chunks read and acks written on the streams peers
// opened to this rank, chunks written and acks read on the ones it opened). A write is started
// by whoever has something to write: isend() and irecv() when the stream is idle (no hand-off),
// else the progress thread when the write before it completes. Application threads are woken
// only for their own requests. (The synchronous API needed a thread per blocking Read or Write,
// and gRPC then passed each socket event from the thread that polled to the one waiting: about
// eight context switches per message on 4 ranks, measured with perf.) Rank 0's Coordinator is
// served synchronously, at start-up only.
//
// Failure: a peer whose process exits closes its connections: operations with it fail with
// NetworkError naming it. A peer that hangs makes waits time out. A chunk whose checksum,
// sender, offset or size is wrong fails the receive with RemoteError. abort() sends a notice
// to every peer (their operations with this rank, sends and receives, fail with RemoteError
// quoting the reason).
// The constructor's rendezvous has its own deadline (connect_timeout).
#pragma once

#include <tessera/comms/transport.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace tessera::comms::grpc {

// The rendezvous protocol (HelloRequest.protocol_version): 2 added Coordinator.Routes and
// chunks read from memory, 3 made RoutesReply per rank.
constexpr uint32_t kProtocolVersion = 3;
constexpr int kMaxWorld = 1 << 14;  // ranks in one world

struct GrpcOptions {
  int rank = 0;
  int world_size = 1;
  std::string coordinator = "127.0.0.1:29500";  // host:port of rank 0's coordinator
  std::string bind_host = "127.0.0.1";
  size_t chunk_bytes = 1 << 20;
  std::chrono::milliseconds connect_timeout{30000};
  bool unix_local = true;                // co-located peers over a Unix-domain socket
  // With unix_local: co-located peers read this rank's large chunks straight from its memory
  // (cross-memory attach) when a probe at start-up shows they can; the stream carries the rest.
  bool cma_local = true;
  size_t socket_buffer_bytes = 4 << 20;  // SO_SNDBUF/SO_RCVBUF of those sockets (0: kernel's)
  // From TESSERA_RANK, TESSERA_WORLD_SIZE, TESSERA_COORDINATOR, TESSERA_BIND_HOST,
  // TESSERA_GRPC_CHUNK_BYTES, TESSERA_GRPC_LOCAL (cma|unix|tcp: cma sets both flags above, unix
  // only unix_local, tcp neither); ValueError naming a missing or bad variable.
  static GrpcOptions from_env();
};

class GrpcTransport : public Transport {
 public:
  explicit GrpcTransport(const GrpcOptions& options);
  ~GrpcTransport() override;

  int rank() const override;
  int size() const override;
  const char* name() const override { return "grpc"; }
  uint64_t max_tag() const override { return ~uint64_t{0}; }
  RequestPtr isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestPtr irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  void abort(const std::string& reason) override;
  std::string peer_name(int peer) const override;
  // Measured with benchmarks/transport_bench on the 2-core VM (README): latency 43 us over Unix
  // sockets, 51 us over TCP; per rank with both directions busy, 2.0 GB/s over Unix sockets, 1.5
  // over TCP, 4.3 when large messages are read from memory (1 MiB messages). The Unix values apply
  // when the rendezvous says every rank is on this host with a Unix listener, the memory ones
  // when every pair of ranks reads each other (the same answers on every rank, so every rank's
  // cost model picks the same algorithm).
  double alpha() const override;
  double beta() const override;
  // 4 MiB when every pair of ranks reads each other's memory (each message costs gRPC's
  // per-message work and a few thread wake-ups, so fewer, larger ones win: collective_bench,
  // 16 MiB all-reduce 0.62x -> 0.76x of MPI_Allreduce), else 1 MiB.
  size_t segment_bytes() const override;

  const std::string& address() const;  // where this rank's Interconnect service listens
  // How this rank's messages reach `peer`: "cma" (co-located; the peer reads large messages from
  // this process's memory, everything else goes over the stream: a Unix socket, or TCP if that
  // connection could not be made), "unix" (co-located, every byte over a Unix-domain socket),
  // "tcp", or "self".
  std::string route(int peer) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A port on 127.0.0.1 that was free a moment ago (for launchers and tests).
int pick_free_port();

}  // namespace tessera::comms::grpc
