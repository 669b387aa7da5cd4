// The gRPC transport. Threads: one progress thread drives every Exchange stream, both
// directions, through gRPC's async API (see Impl::progress); rank 0's Coordinator is served
// synchronously at start-up. Receives are matched per source in posting order.
#include <tessera/comms/grpc/transport.h>
#include <tessera/comms/grpc/wire.h>
#include <tessera/comms/crc32.h>
#include <tessera/comms/matcher.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>
#include <tessera/proto/interconnect.grpc.pb.h>

#include <grpcpp/create_channel_posix.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <cstddef>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

namespace tessera::comms::grpc {

namespace gr = ::grpc;
using proto::Ack;

// The Interconnect service's one method (proto/interconnect.proto). Its chunks travel as
// WireChunk (grpc/wire.h): the bytes of a proto::Chunk without protobuf's payload copies, so the
// generated Interconnect stub and service are bypassed for this method (the Coordinator keeps
// its generated code).
constexpr char kExchangeMethod[] = "/tessera.proto.Interconnect/Exchange";

namespace {

constexpr uint64_t kMaxMessageBytes = uint64_t{1} << 36;  // sanity bound on a peer's claim
constexpr int kFraming = 64 << 10;                         // proto fields around a payload
// The largest coordinator reply for a world of n ranks: a HelloReply's addresses, Unix socket
// names, host ids and probe words are well under 1 KiB per rank.
int coordinator_reply_limit(int n) { return kFraming * 16 + 1024 * n; }
// Messages up to this size are sent eagerly: copied into gRPC-owned slices, their sends complete
// when gRPC has them (the receiver's ack still arrives, and is then only counted). Larger ones
// are sent from the caller's buffer and complete on the ack.
constexpr size_t kEagerBytes = 256 << 10;

uint32_t crc32_of(const void* data, size_t n) { return crc32_update(0, data, n); }

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

int env_int(const char* name, bool required, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) {
    TESSERA_CHECK(!required, "grpc transport: environment variable ", name, " is not set");
    return fallback;
  }
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  TESSERA_CHECK(end && *end == 0 && x >= 0 && x < (1L << 30), "grpc transport: ", name, "='", v,
                "' is not a non-negative integer");
  return static_cast<int>(x);
}

// Bulk transfers: large HTTP/2 frames, deep write buffers and read-ahead, big TCP reads.
template <typename Args>
void set_http2_args(Args&& set) {
  set(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 4 << 20);
  set(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  set(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
  set(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  set(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
}
void tune_http2(gr::ServerBuilder& b) {
  set_http2_args([&](const char* k, int v) { b.AddChannelArgument(k, v); });
}
void tune_http2(gr::ChannelArguments& a) {
  set_http2_args([&](const char* k, int v) { a.SetInt(k, v); });
}

// gRPC reads the socket into freshly allocated 1-4 MiB buffers. Above glibc's mmap threshold
// each is a new mapping that the kernel's copy then faults in page by page (a sixth of the
// transport's CPU time, measured with `perf record -e page-faults`). Keeping such blocks in the
// heap lets them be reused. Process-wide, so done once, and not when the user tuned malloc
// (GLIBC_TUNABLES) or opted out with TESSERA_GRPC_MALLOC_TUNE=0.
void keep_large_blocks_in_heap() {
  static std::once_flag once;
  std::call_once(once, [] {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    const char* opt = std::getenv("TESSERA_GRPC_MALLOC_TUNE");
    if ((tunables && std::strstr(tunables, "glibc.malloc")) || (opt && std::string(opt) == "0")) return;
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    log::get("comms")->debug("grpc: malloc keeps blocks below 64 MiB in the heap (TESSERA_GRPC_MALLOC_TUNE=0: off)");
#endif
  });
}

// ---- co-located peers: Unix-domain sockets in the abstract namespace --------------------------

// Which kernel and network namespace this process runs in: abstract Unix socket names are
// visible exactly there. "" when /proc does not tell (then every peer is reached by TCP).
std::string host_id() {
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::string boot;
  std::getline(f, boot);
  struct stat st {};
  if (boot.empty() || ::stat("/proc/self/ns/net", &st) != 0) return "";
  return boot + "/netns:" + std::to_string(st.st_ino);
}

sockaddr_un abstract_address(const std::string& name, socklen_t& len) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  TESSERA_CHECK(name.size() + 1 < sizeof a.sun_path, "grpc transport: socket name '", name, "' is too long");
  std::memcpy(a.sun_path + 1, name.data(), name.size());  // sun_path[0] == 0: abstract
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return a;
}

// Deep socket buffers: a 1 MiB chunk then moves in one or two wake-ups instead of five
// (Unix sockets default to 208 KiB). The kernel doubles the request and caps it at
// net.core.wmem_max / rmem_max; with CAP_NET_ADMIN the FORCE options lift the cap; without it
// the capped size stands.
void size_socket_buffers(int fd, size_t bytes) {
  if (bytes == 0) return;
  const int want = static_cast<int>(std::min<size_t>(bytes, size_t{1} << 29));
  const std::pair<int, int> opts[] = {{SO_SNDBUF, SO_SNDBUFFORCE}, {SO_RCVBUF, SO_RCVBUFFORCE}};
  for (auto [opt, force] : opts) {
    ::setsockopt(fd, SOL_SOCKET, opt, &want, sizeof want);
    int got = 0;
    socklen_t len = sizeof got;
    if (::getsockopt(fd, SOL_SOCKET, opt, &got, &len) == 0 && got < want)
      ::setsockopt(fd, SOL_SOCKET, force, &want, sizeof want);
  }
}

// Listens on a fresh abstract name and hands every accepted connection to the gRPC server, which
// then serves it like a TCP connection it accepted itself.
class LocalListener {
 public:
  LocalListener(int rank, size_t buffer_bytes) : buffer_bytes_(buffer_bytes) {
    std::random_device rd;
    char suffix[32];
    std::snprintf(suffix, sizeof suffix, "%08x%08x", rd(), rd());
    name_ = "tessera-grpc-" + std::to_string(::getpid()) + "-" + std::to_string(rank) + "-" + suffix;
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    TESSERA_CHECK_AS(NetworkError, fd_ >= 0, "grpc transport: cannot open a Unix socket: ", std::strerror(errno));
    socklen_t len = 0;
    sockaddr_un a = abstract_address(name_, len);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd_, SOMAXCONN) != 0) {
      int e = errno;
      ::close(fd_);
      TESSERA_THROW(NetworkError, "grpc transport: cannot listen on Unix socket @", name_, ": ", std::strerror(e));
    }
  }
  ~LocalListener() {
    stop();
    ::close(fd_);
  }
  const std::string& name() const { return name_; }
  // Accepts until stop(); call once the server has started.
  void start(gr::Server* server) {
    thread_ = std::thread([this, server] {
      ::pthread_setname_np(::pthread_self(), "tsr-listen");
      while (!stopping_) {
        int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c >= 0) {
          size_socket_buffers(c, buffer_bytes_);
          gr::AddInsecureChannelFromFd(server, c);
        } else if (errno != EINTR && errno != ECONNABORTED && !stopping_) {
          // Out of descriptors or memory: the listener stays open and peers queue in its
          // backlog, so keep accepting rather than leave them connected to no one.
          log::get("comms")->warn("grpc: accepting a Unix-socket connection failed: {}; retrying", std::strerror(errno));
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    });
  }
  void stop() {
    if (!thread_.joinable()) return;
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);  // wakes accept4 (EINVAL)
    thread_.join();
  }

 private:
  size_t buffer_bytes_;
  std::string name_;
  int fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// A gRPC channel over a connection to a co-located rank's LocalListener, or nullptr if it cannot
// be made (the caller falls back to TCP).
std::shared_ptr<gr::Channel> connect_local(const std::string& name, size_t buffer_bytes,
                                           const gr::ChannelArguments& args, std::string& why) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    why = std::strerror(errno);
    return nullptr;
  }
  size_socket_buffers(fd, buffer_bytes);
  socklen_t len = 0;
  sockaddr_un a = abstract_address(name, len);
  int rc;
  do rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), len);
  while (rc != 0 && errno == EINTR);
  if (rc != 0 || ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
    why = std::strerror(errno);
    ::close(fd);
    return nullptr;
  }
  return gr::CreateCustomInsecureChannelFromFd("unix-abstract:" + name, fd, args);
}

}  // namespace

GrpcOptions GrpcOptions::from_env() {
  GrpcOptions o;
  o.rank = env_int("TESSERA_RANK", true, 0);
  o.world_size = env_int("TESSERA_WORLD_SIZE", true, 1);
  o.coordinator = env_or("TESSERA_COORDINATOR", o.coordinator);
  o.bind_host = env_or("TESSERA_BIND_HOST", o.bind_host);
  o.chunk_bytes = static_cast<size_t>(env_int("TESSERA_GRPC_CHUNK_BYTES", false, static_cast<int>(o.chunk_bytes)));
  const std::string local = env_or("TESSERA_GRPC_LOCAL", "cma");
  TESSERA_CHECK(local == "cma" || local == "unix" || local == "tcp", "grpc transport: TESSERA_GRPC_LOCAL='", local,
                "' is not one of cma, unix, tcp");
  o.unix_local = local != "tcp";
  o.cma_local = local == "cma";
  return o;
}

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TESSERA_CHECK_AS(NetworkError, fd >= 0, "cannot open a socket: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
           ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  TESSERA_CHECK_AS(NetworkError, ok, "cannot find a free port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

// Interconnect.Exchange with WireChunk messages (what the generated service would do with
// proto::Chunk), served asynchronously: its streams are driven by the transport's progress thread
// (see GrpcTransport::Impl::progress).
class ExchangeService : public gr::Service {
 public:
  using Stream = gr::ServerAsyncReaderWriter<Ack, WireChunk>;
  ExchangeService() {
    AddMethod(new gr::internal::RpcServiceMethod(kExchangeMethod, gr::internal::RpcMethod::BIDI_STREAMING, nullptr));
    MarkMethodAsync(0);
  }
  // Asks for the next incoming stream; `tag` completes on cq when one arrives.
  void request(gr::ServerContext* ctx, Stream* stream, gr::ServerCompletionQueue* cq, void* tag) {
    RequestAsyncBidiStreaming(0, ctx, stream, cq, cq, tag);
  }
};

// A completion-queue tag: what to do when its operation completes (ok: it succeeded). One per
// kind of operation on a stream; gRPC allows one of each in flight, so each is reused.
struct Tag {
  std::function<void(bool)> on;
};

// ---- receive side ----------------------------------------------------------------------------

namespace {

struct RecvOp {
  char* dst = nullptr;
  size_t bytes = 0;
  bool done = false;
  std::optional<Failure> failed;
  struct Incoming* bound = nullptr;  // the message being written into dst
};

struct Incoming {
  uint64_t tag = 0;
  uint64_t total = 0;
  uint64_t received = 0;
  std::unique_ptr<char[]> data;           // while no receive is bound (total bytes)
  std::shared_ptr<RecvOp> target;         // bound receive, written directly
  bool discard = false;                   // its receive went away: drop the rest
  bool acked = false;                     // all bytes in and the sender's ack written
  // A message in the sender's memory that arrived before its receive was posted: nothing is
  // read (or acknowledged) until then; irecv() reads it straight into the receive's buffer.
  bool deferred = false;
  uint64_t remote_address = 0, remote_guard = 0;
  uint64_t seq = 0;                       // Chunk.seq, echoed in the ack
  std::string refused;                    // non-empty: acknowledged with this error
};

// Everything received from one source rank. Guarded by mu.
struct Inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::deque<std::shared_ptr<RecvOp>>> posted;
  std::map<uint64_t, std::deque<std::shared_ptr<Incoming>>> unexpected;
  std::shared_ptr<Incoming> current;
  std::optional<Failure> dead;
  // The sender's stream while it is served (null before and after), so that irecv() can
  // acknowledge a deferred message on it.
  struct ServerCall* call = nullptr;

  void fail_all(const Failure& f) {
    if (!dead) dead = f;
    for (auto& [tag, q] : posted)
      for (auto& op : q) op->failed = f;
    posted.clear();
    if (current && current->target) {
      current->target->failed = f;
      current->target->bound = nullptr;
      current->target.reset();
    }
    current.reset();
    cv.notify_all();
  }
};

// One accepted Exchange stream: the chunks of one sender, read one at a time, and the acks
// written back on it, one at a time, in order. Lives until the transport is destroyed.
struct ServerCall {
  gr::ServerContext ctx;
  ExchangeService::Stream stream{&ctx};
  WireChunk chunk;  // the Read in flight lands here
  int src = -1;     // the sender, from its first chunk
  bool started = false;  // accepted (a call exists to cancel); guarded by Impl::calls_mu
  Tag accepted, read, wrote, finished;
  // An ack to write; once written, the receive it completes (a large message's, or a deferred
  // one's that irecv() read) is completed.
  struct Pending {
    Ack ack;
    std::shared_ptr<Incoming> whole;
    std::shared_ptr<RecvOp> op;
  };
  std::mutex mu;  // the write side below; taken after Inbox::mu, never the other way round
  std::deque<Pending> acks;  // front: being written while `writing`
  bool writing = false;
  bool closing = false;      // no more reads: Finish once the acks are written
  bool finish_sent = false;
  gr::Status status;         // what Finish reports
};

class RecvRequest : public Request {
 public:
  RecvRequest(std::shared_ptr<Inbox> in, uint64_t tag, std::shared_ptr<RecvOp> op)
      : in_(std::move(in)), tag_(tag), op_(std::move(op)) {}
  ~RecvRequest() override {
    std::lock_guard<std::mutex> lock(in_->mu);
    if (op_->done || op_->failed) return;
    if (op_->bound) {
      op_->bound->target.reset();
      op_->bound->discard = true;
      op_->bound = nullptr;
      return;
    }
    auto it = in_->posted.find(tag_);
    if (it == in_->posted.end()) return;
    auto& q = it->second;
    for (auto o = q.begin(); o != q.end(); ++o) {
      if (*o == op_) {
        q.erase(o);
        break;
      }
    }
  }
  bool wait(Deadline deadline) override {
    std::unique_lock<std::mutex> lock(in_->mu);
    if (!in_->cv.wait_until(lock, deadline, [&] { return op_->done || op_->failed.has_value(); })) return false;
    if (op_->failed) throw_failure(*op_->failed);
    return true;
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(in_->mu);
    if (op_->failed) throw_failure(*op_->failed);
    return op_->done;
  }

 private:
  std::shared_ptr<Inbox> in_;
  uint64_t tag_;
  std::shared_ptr<RecvOp> op_;
};

// ---- send side -------------------------------------------------------------------------------

struct SendOp {
  const char* data = nullptr;
  size_t bytes = 0;
  uint64_t tag = 0;
  uint64_t seq = 0;     // its number on the stream, given when it is taken for writing
  bool remote = false;  // its chunks went out as addresses: the receiver reads this buffer until the ack
  bool done = false;
  std::optional<Failure> failed;
};

// A word that outlives its transport: a peer may still read it (wire.h, remote_guard) after this
// process destroyed the transport, and must not find reused memory there. Kept for the process's
// lifetime (8 bytes per peer per transport).
std::atomic<uint64_t>& immortal_word() {
  static std::mutex mu;
  static std::deque<std::atomic<uint64_t>> words;  // a deque never moves its elements
  std::lock_guard<std::mutex> lock(mu);
  return words.emplace_back(0);
}

// Marks the sends to a peer given up (see Outbox::given_up) before their buffers may be reused.
void give_up(std::atomic<uint64_t>& guard) {
  guard.store(1);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // before any later store to the buffers
}

struct SendOp;
extern const SendOp kNotice;  // Outbox::writing while an abort notice is written

struct Outbox {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::shared_ptr<SendOp>> queue;     // not yet written
  std::deque<std::shared_ptr<SendOp>> unacked;   // written, waiting for the receiver's ack
  std::optional<Failure> dead;
  std::string abort_notice;
  // Non-zero once a send whose chunks went out as addresses was given up before its ack: the
  // receiver reads it after every such chunk (wire.h, remote_guard) and then refuses the bytes.
  std::atomic<uint64_t>& given_up = immortal_word();
  bool stop = false;           // the transport is being destroyed: close once the queue is written
  bool started = false;        // the stream is open (StartCall completed)
  bool writes_done = false;    // WritesDone sent (or the stream is broken): nothing more is written
  bool read_done = false;      // the ack stream ended
  bool opened = false;         // the stream was created
  bool finished = false;       // Finish completed: nothing of this stream is in flight
  // Who is writing to the stream (one write in flight at a time): the op whose chunks are being
  // written (`current`, `off` bytes of it done, a chunk of `chunk_len` in flight), or &kNotice
  // while an abort notice is; null when the stream is idle.
  const SendOp* writing = nullptr;
  std::shared_ptr<SendOp> current;
  size_t off = 0, chunk_len = 0;
  uint64_t next_seq = 1;            // Chunk.seq of the next message written
  gr::ClientContext ctx;
  std::unique_ptr<gr::internal::RpcMethod> method;
  std::unique_ptr<gr::ClientAsyncReaderWriter<WireChunk, Ack>> stream;
  Ack ack;                          // the Read in flight lands here
  gr::Status status;
  Tag on_start, on_write, on_read, on_writes_done, on_finish;

  void fail_all(const Failure& f) {
    if (!dead) dead = f;
    for (auto* q : {&queue, &unacked}) {
      for (auto& op : *q)
        if (!op->done) op->failed = f;  // an eager send that completed stays completed
      q->clear();
    }
    cv.notify_all();
  }
};

const SendOp kNotice{};

class SendRequest : public Request {
 public:
  SendRequest(std::shared_ptr<Outbox> out, std::shared_ptr<SendOp> op) : out_(std::move(out)), op_(std::move(op)) {}
  ~SendRequest() override {
    // A send still queued is withdrawn. One being written reads the caller's buffer, which is
    // about to go away: cancel the stream (only error paths get here; the transport is then
    // unusable anyway) and wait until gRPC has let go of it (its write completes, failed).
    std::unique_lock<std::mutex> lock(out_->mu);
    // Acknowledged: every chunk was serialized and received; the buffer is no longer read.
    if (op_->done) return;
    if (out_->writing != op_.get()) {
      for (auto o = out_->queue.begin(); o != out_->queue.end(); ++o) {
        if (*o == op_) {
          out_->queue.erase(o);
          return;
        }
      }
      // Written as addresses, not acknowledged, not refused: the receiver may be reading the
      // buffer. Mark it given up (a read under way then refuses what it read) and cancel the
      // stream so that no more is read. A refused (failed) one is no longer read.
      if (op_->remote && !op_->failed) {
        give_up(out_->given_up);
        out_->ctx.TryCancel();
      }
      return;
    }
    if (op_->remote) give_up(out_->given_up);  // its descriptor may already be with the receiver
    out_->ctx.TryCancel();
    out_->cv.wait(lock, [&] { return out_->writing != op_.get(); });
  }
  bool wait(Deadline deadline) override {
    std::unique_lock<std::mutex> lock(out_->mu);
    if (!out_->cv.wait_until(lock, deadline, [&] { return op_->done || op_->failed.has_value(); })) return false;
    if (op_->done) return true;
    throw_failure(*op_->failed);
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(out_->mu);
    if (op_->done) return true;
    if (op_->failed) throw_failure(*op_->failed);
    return false;
  }

 private:
  std::shared_ptr<Outbox> out_;
  std::shared_ptr<SendOp> op_;
};

class FailedRequest : public Request {
 public:
  explicit FailedRequest(Failure f) : f_(std::move(f)) {}
  bool wait(Deadline) override { throw_failure(f_); }
  bool test() override { throw_failure(f_); }

 private:
  Failure f_;
};

}  // namespace

// ---- the transport -----------------------------------------------------------------------------


struct GrpcTransport::Impl : public proto::Coordinator::Service {
  GrpcOptions opt;
  std::string address;
  std::vector<std::string> addresses;
  std::unique_ptr<gr::Server> server;
  std::unique_ptr<ExchangeService> exchange;
  std::vector<std::shared_ptr<Inbox>> inboxes;
  std::vector<std::shared_ptr<Outbox>> outboxes;
  std::vector<std::shared_ptr<gr::Channel>> channels;
  std::unique_ptr<LocalListener> local;   // co-located peers connect here (unix_local)
  // Written by the constructor while early peers' streams may already be served (and name
  // peers in errors): guarded by names_mu, a leaf lock.
  mutable std::mutex names_mu;
  std::vector<char> via_unix;             // per peer: reached over a Unix socket
  // Cross-memory attach, per peer, fixed before any stream opens: cma_to[p], p reads this rank's
  // large chunks from its memory; cma_from[p], this rank reads p's (pid peer_pid[p]).
  std::vector<char> cma_to, cma_from;
  std::vector<int> peer_pid;
  volatile uint64_t probe_word = 0;       // peers read it to prove they can read this process
  // The progress thread's completion queue (see progress()) and the streams it serves.
  std::unique_ptr<gr::ServerCompletionQueue> cq;
  std::thread progress_thread;
  std::mutex calls_mu;
  std::condition_variable calls_cv;
  bool serving = true;
  int live = 0;  // streams (and requests for one) not yet over; the queue shuts down at 0
  std::vector<std::unique_ptr<ServerCall>> calls;
  bool all_cma = false;                   // every pair of ranks both ways (for alpha/beta)
  // Every rank on this host with a Unix listener, as the rendezvous reply (the same on every
  // rank) says: alpha()/beta() use it, so every rank's cost model picks the same algorithm.
  bool all_local = false;
  std::atomic<bool> aborted{false};
  std::string abort_reason;
  std::mutex abort_mu;

  // Coordinator state (rank 0).
  std::mutex coord_mu;
  std::condition_variable coord_cv;
  std::vector<std::string> hellos, hello_local, hello_host;
  std::vector<uint32_t> hello_pid;
  std::vector<uint64_t> hello_probe, hello_nonce;
  int hello_count = 0;
  std::vector<std::vector<char>> reads;   // Routes: row r = what rank r could read
  int routes_count = 0;
  int every_pair = -1;  // -1: not yet known; else whether every rank read every other rank

  // Waits (coord_mu held) until `count` reaches the world size or the call's deadline passes;
  // false with `missing` naming the ranks not heard from.
  bool wait_for_all(std::unique_lock<std::mutex>& lock, gr::ServerContext* ctx, const int& count,
                    const std::function<bool(int)>& heard, std::string& missing) {
    while (count < opt.world_size) {
      if (ctx->IsCancelled() || coord_cv.wait_until(lock, ctx->deadline()) == std::cv_status::timeout) {
        for (int i = 0; i < opt.world_size; ++i)
          if (!heard(i)) missing += (missing.empty() ? "" : ", ") + std::to_string(i);
        return false;
      }
    }
    return true;
  }

  std::string who(int r) const {
    std::string s = "rank " + std::to_string(r);
    std::lock_guard<std::mutex> lock(names_mu);
    if (r >= 0 && static_cast<size_t>(r) < addresses.size()) {
      const bool unix_route = static_cast<size_t>(r) < via_unix.size() && via_unix[r];
      s += " (" + addresses[r] + (unix_route ? ", over a Unix socket" : "") + ")";
    }
    return s;
  }

  // Coordinator.Hello: wait until every rank has said hello, then tell everyone everything.
  gr::Status Hello(gr::ServerContext* ctx, const proto::HelloRequest* req, proto::HelloReply* reply) override {
    if (req->protocol_version() != kProtocolVersion) {
      return {gr::StatusCode::FAILED_PRECONDITION,
              "protocol version " + std::to_string(req->protocol_version()) + ", coordinator speaks " +
                  std::to_string(kProtocolVersion)};
    }
    if (static_cast<int>(req->world_size()) != opt.world_size) {
      return {gr::StatusCode::INVALID_ARGUMENT,
              "rank " + std::to_string(req->rank()) + " says the world has " +
                  std::to_string(req->world_size()) + " ranks; the coordinator was started with " +
                  std::to_string(opt.world_size)};
    }
    int r = static_cast<int>(req->rank());
    std::unique_lock<std::mutex> lock(coord_mu);
    if (r < 0 || r >= opt.world_size) {
      return {gr::StatusCode::INVALID_ARGUMENT, "rank " + std::to_string(r) + " is outside the world of " +
                                                    std::to_string(opt.world_size)};
    }
    if (!hellos[r].empty() && hellos[r] != req->address()) {
      return {gr::StatusCode::ALREADY_EXISTS, "rank " + std::to_string(r) + " already said hello from " +
                                                  hellos[r] + " (now from " + req->address() + ")"};
    }
    if (hellos[r].empty()) {
      hellos[r] = req->address();
      hello_local[r] = req->local_address();
      hello_host[r] = req->host_id();
      hello_pid[r] = req->pid();
      hello_probe[r] = req->probe_address();
      hello_nonce[r] = req->probe_nonce();
      ++hello_count;
      coord_cv.notify_all();
    }
    std::string missing;
    if (!wait_for_all(lock, ctx, hello_count, [&](int i) { return !hellos[i].empty(); }, missing))
      return {gr::StatusCode::DEADLINE_EXCEEDED, "rendezvous incomplete: no hello from rank(s) " + missing};
    for (int i = 0; i < opt.world_size; ++i) {
      reply->add_addresses(hellos[i]);
      reply->add_local_addresses(hello_local[i]);
      reply->add_host_ids(hello_host[i]);
      reply->add_pids(hello_pid[i]);
      reply->add_probe_addresses(hello_probe[i]);
      reply->add_probe_nonces(hello_nonce[i]);
    }
    return gr::Status::OK;
  }

  // Coordinator.Routes: the second round; every rank says whose memory it could read.
  gr::Status Routes(gr::ServerContext* ctx, const proto::RoutesRequest* req, proto::RoutesReply* reply) override {
    const int n = opt.world_size;
    const int r = static_cast<int>(req->rank());
    if (r < 0 || r >= n || req->reads_size() != n) {
      return {gr::StatusCode::INVALID_ARGUMENT, "routes from rank " + std::to_string(r) + " with " +
                                                    std::to_string(req->reads_size()) + " entries (world of " +
                                                    std::to_string(n) + ")"};
    }
    std::unique_lock<std::mutex> lock(coord_mu);
    if (reads[r].empty()) {
      reads[r].assign(req->reads().begin(), req->reads().end());
      ++routes_count;
      coord_cv.notify_all();
    }
    std::string missing;
    if (!wait_for_all(lock, ctx, routes_count, [&](int i) { return !reads[i].empty(); }, missing))
      return {gr::StatusCode::DEADLINE_EXCEEDED, "rendezvous incomplete: no routes from rank(s) " + missing};
    if (every_pair < 0) {  // once, by the first reply after the last rank's routes
      bool every = n > 1;
      for (int i = 0; i < n && every; ++i)
        for (int j = 0; j < n && every; ++j) every = i == j || reads[i][j] != 0;
      every_pair = every ? 1 : 0;
    }
    for (int i = 0; i < n; ++i) reply->add_read_by(reads[i][r] != 0);
    reply->set_every_pair(every_pair == 1);
    return gr::Status::OK;
  }

  // ---- the progress thread: every Exchange stream, both directions --------------------------
  //
  // Every stream operation is asynchronous on one completion queue, and one thread (this one)
  // takes their completions: a chunk read, an ack written or read, a stream opened or closed.
  // With gRPC's synchronous API each blocking Read or Write needed its own thread, and gRPC
  // handed every socket event from whichever thread polled to the one waiting (about eight
  // context switches per message, measured with perf sched on 4 ranks); here the thread that
  // polls is the one that acts, and application threads are woken only for their own requests.
  // Writes are started by whoever has something to write (isend(), irecv(), or this thread when a
  // write completes); only completions come here.
  void progress() {
    void* tag = nullptr;
    bool ok = false;
    while (cq->Next(&tag, &ok)) {
      try {
        static_cast<Tag*>(tag)->on(ok);
      } catch (const std::exception& e) {
        // Nothing here is expected to throw (out of memory at worst). The stream the event
        // belonged to may now be stuck: fail everything and cancel every stream rather than
        // leave waits to time out; their completions still come here and end them.
        fail_everything(std::string("the transport's progress thread failed: ") + e.what());
      }
    }
  }

  void fail_everything(const std::string& why) {
    log::get("comms")->error("grpc: rank {}: {}", opt.rank, why);
    const Failure f{FailKind::comm, why};
    for (auto& in : inboxes) {
      std::lock_guard<std::mutex> lock(in->mu);
      in->fail_all(f);
    }
    for (auto& out : outboxes) {
      {
        std::lock_guard<std::mutex> lock(out->mu);
        out->fail_all(f);
      }
      out->ctx.TryCancel();
    }
    std::lock_guard<std::mutex> lock(calls_mu);
    for (auto& call : calls)
      if (call->started) call->ctx.TryCancel();
  }

  // Asks gRPC for the next incoming Exchange stream (one is always asked for while serving).
  void accept_next() {
    std::lock_guard<std::mutex> lock(calls_mu);
    if (!serving) return;
    calls.push_back(std::make_unique<ServerCall>());
    ServerCall* call = calls.back().get();
    ++live;
    call->accepted.on = [this, call](bool ok) {
      if (!ok) return stream_over();  // the server is shutting down
      {
        std::lock_guard<std::mutex> lock(calls_mu);
        call->started = true;
      }
      accept_next();
      call->stream.Read(&call->chunk, &call->read);
    };
    call->read.on = [this, call](bool ok) { on_chunk(*call, ok); };
    call->wrote.on = [this, call](bool ok) { on_ack_written(*call, ok); };
    call->finished.on = [this](bool) { stream_over(); };
    exchange->request(&call->ctx, &call->stream, cq.get(), &call->accepted);
  }

  void stream_over() {
    std::lock_guard<std::mutex> lock(calls_mu);
    --live;
    calls_cv.notify_all();
  }

  // A chunk read from a sender's stream (ok false: the stream ended).
  void on_chunk(ServerCall& call, bool ok) {
    if (!ok) return end_stream(call, "");
    WireChunk& c = call.chunk;
    if (!c.malformed.empty()) return end_stream(call, "a message that is not a chunk (" + c.malformed + ")");
    if (call.src < 0) {
      if (c.src_rank >= static_cast<uint32_t>(opt.world_size)) {
        return end_stream(call, "a chunk names sender rank " + std::to_string(c.src_rank) +
                                    ", outside the world of " + std::to_string(opt.world_size));
      }
      call.src = static_cast<int>(c.src_rank);
      std::lock_guard<std::mutex> lock(inboxes[call.src]->mu);
      inboxes[call.src]->call = &call;
    }
    const int src = call.src;
    Inbox& in = *inboxes[src];
    if (!c.abort_reason.empty()) {
      const Failure f{FailKind::remote, who(src) + " aborted: " + c.abort_reason};
      {
        std::lock_guard<std::mutex> lock(in.mu);
        in.fail_all(f);
      }
      // Nothing sent to it will be received either (messages waiting for its receives are
      // never read): fail those sends now rather than at their deadlines.
      {
        Outbox& out = *outboxes[src];
        std::lock_guard<std::mutex> lock(out.mu);
        out.fail_all(f);
      }
      return end_stream(call, "");
    }
    std::shared_ptr<Incoming> whole;
    std::string error = accept(src, in, c, whole);
    if (!error.empty()) {
      ServerCall::Pending nack;
      nack.ack.set_tag(c.tag);
      nack.ack.set_seq(c.seq);
      nack.ack.set_error(error);
      queue_ack(call, std::move(nack));
      return end_stream(call, error);
    }
    if (whole) {
      // The sender of a large message waits for its ack: its receive completes once the ack is
      // written, so a receiver that finishes its collective and then stops or dies never leaves
      // the sender waiting for an ack it did not write. An eager (small) send completed when it
      // was written: complete the receive at once, ack after.
      ServerCall::Pending p;
      p.ack.set_tag(c.tag);
      p.ack.set_seq(whole->seq);
      if (whole->refused.empty()) p.ack.set_received_bytes(c.total_bytes);
      else p.ack.set_error(whole->refused);
      if (whole->total <= kEagerBytes) complete_received(in, ServerCall::Pending{{}, whole, nullptr});
      else p.whole = whole;
      queue_ack(call, std::move(p));
    }
    call.chunk = WireChunk{};  // drop the read slices before the next read
    call.stream.Read(&call.chunk, &call.read);
  }

  // Completes what an ack (written, or never to be written) was for.
  void complete_received(Inbox& in, const ServerCall::Pending& p) {
    std::lock_guard<std::mutex> lock(in.mu);
    if (p.whole) {
      p.whole->acked = true;
      if (p.whole->target) {
        p.whole->target->done = true;
        p.whole->target->bound = nullptr;
        p.whole->target.reset();
      }
    }
    if (p.op && !p.op->failed) p.op->done = true;
    in.cv.notify_all();
  }

  // Writes an ack on `call` (after those before it). If the stream is over, what it was for
  // completes at once (the bytes are in; the sender is gone or going).
  void queue_ack(ServerCall& call, ServerCall::Pending&& p) {
    {
      std::lock_guard<std::mutex> lock(call.mu);
      if (!call.finish_sent) {
        call.acks.push_back(std::move(p));
        if (!call.writing) {
          call.writing = true;
          call.stream.Write(call.acks.front().ack, &call.wrote);
        }
        return;
      }
    }
    if (call.src >= 0) complete_received(*inboxes[call.src], p);
  }

  void on_ack_written(ServerCall& call, bool ok) {
    std::deque<ServerCall::Pending> done;
    {
      std::lock_guard<std::mutex> lock(call.mu);
      done.push_back(std::move(call.acks.front()));
      call.acks.pop_front();
      if (!ok) {  // the stream broke: nothing more goes out on it
        for (auto& p : call.acks) done.push_back(std::move(p));
        call.acks.clear();
      }
      if (!call.acks.empty()) {
        call.stream.Write(call.acks.front().ack, &call.wrote);
      } else {
        call.writing = false;
        if (call.closing && !call.finish_sent) {
          call.finish_sent = true;
          call.stream.Finish(call.status, &call.finished);
        }
      }
    }
    if (call.src >= 0)
      for (auto& p : done) complete_received(*inboxes[call.src], p);
  }

  // No more reads on `call`: fail what waits on its sender (unless it ended cleanly after an
  // abort notice), then end the stream once its acks are written.
  void end_stream(ServerCall& call, const std::string& error) {
    if (call.src >= 0) {
      Inbox& in = *inboxes[call.src];
      std::lock_guard<std::mutex> lock(in.mu);
      in.call = nullptr;
      if (!error.empty()) {
        in.fail_all({FailKind::remote, "bad message from " + who(call.src) + ": " + error});
      } else if (!in.dead) {
        in.fail_all({FailKind::network, who(call.src) + " closed its connection (process exited or transport destroyed)"});
      }
    }
    std::lock_guard<std::mutex> lock(call.mu);
    call.closing = true;
    call.status = error.empty() ? gr::Status::OK : gr::Status(gr::StatusCode::INVALID_ARGUMENT, error);
    if (!call.writing && !call.finish_sent) {
      call.finish_sent = true;
      call.stream.Finish(call.status, &call.finished);
    }
  }

  // irecv() of a message that waits in the sender's memory (Incoming::deferred): read it into the
  // receive's buffer now, then acknowledge it on the sender's stream (or refuse it, so the
  // sender's send fails too); the receive completes once the ack is written. `lock` holds in->mu.
  RequestPtr receive_deferred(int src, const Incoming& inc, std::unique_lock<std::mutex> lock,
                              const std::shared_ptr<Inbox>& in, uint64_t tag, const std::shared_ptr<RecvOp>& op) {
    if (in->dead) return std::make_unique<FailedRequest>(*in->dead);
    std::optional<Failure> failed;
    if (inc.total != op->bytes) {
      failed = Failure{FailKind::remote, "message size mismatch: " + who(src) + " sent " + std::to_string(inc.total) +
                                             " bytes, the receiver expected " + std::to_string(op->bytes)};
    }
    lock.unlock();
    std::string why;
    if (!failed && !read_remote(reader_pid(src), inc.remote_address, op->bytes, op->dst, inc.remote_guard, why)) {
      failed = Failure{FailKind::remote, "cannot read a " + std::to_string(inc.total) + "-byte message (tag " +
                                             std::to_string(tag) + ") from the memory of " + who(src) + ": " + why};
    }
    ServerCall::Pending p;
    p.ack.set_tag(tag);
    p.ack.set_seq(inc.seq);
    if (failed) p.ack.set_error(failed->message);
    else p.ack.set_received_bytes(inc.total);
    if (!failed) p.op = op;
    lock.lock();
    ServerCall* call = in->call;  // null: the sender is gone; bytes already read stay good (the guard was clear)
    lock.unlock();
    if (call) queue_ack(*call, std::move(p));
    else if (!failed) op->done = true;
    if (failed) return std::make_unique<FailedRequest>(*failed);
    return std::make_unique<RecvRequest>(in, tag, op);
  }

  // The pid to read `src`'s memory with, or 0 if this rank does not read it.
  int reader_pid(int src) const {
    std::lock_guard<std::mutex> names(names_mu);
    return static_cast<size_t>(src) < cma_from.size() && cma_from[src] ? peer_pid[src] : 0;
  }

  // One chunk into the inbox of `src`: its payload is copied straight from gRPC's read slices to
  // the bound receive's buffer (or held for a receive not yet posted) while its crc32 is computed;
  // a chunk in the sender's memory is copied from there into the bound receive's buffer, or, with
  // no receive posted, left there for irecv() (Incoming::deferred). The copy runs under in.mu.
  // Returns "" or what is wrong with it; `whole` gets the message this chunk completed (the caller
  // acknowledges it, then completes its receive).
  std::string accept(int src, Inbox& in, const WireChunk& c, std::shared_ptr<Incoming>& whole) {
    if (c.src_rank != static_cast<uint32_t>(src)) return "chunk from rank " + std::to_string(c.src_rank) + " on rank " + std::to_string(src) + "'s stream";
    if (c.dst_rank != static_cast<uint32_t>(opt.rank)) return "chunk for rank " + std::to_string(c.dst_rank) + " arrived at rank " + std::to_string(opt.rank);
    if (c.total_bytes > kMaxMessageBytes) return "message of " + std::to_string(c.total_bytes) + " bytes is absurd";
    int pid = 0;
    if (c.remote) {
      if (c.offset != 0 || c.size != c.total_bytes) return "a chunk in the sender's memory that is not a whole message";
      pid = reader_pid(src);
      if (!pid) return "chunk in the sender's memory, but this rank did not agree to read it";
    }
    std::lock_guard<std::mutex> lock(in.mu);
    if (c.offset == 0) {
      if (in.current) return "a new message started before the previous one was complete";
      auto inc = std::make_shared<Incoming>();
      inc->tag = c.tag;
      inc->total = c.total_bytes;
      inc->seq = c.seq;
      auto it = in.posted.find(c.tag);
      if (c.remote && (it == in.posted.end() || it->second.empty())) {
        // Not read until its receive is posted (irecv), straight into that receive's buffer.
        inc->deferred = true;
        inc->remote_address = c.remote_address;
        inc->remote_guard = c.remote_guard;
        in.unexpected[c.tag].push_back(inc);
        return "";
      }
      if (it != in.posted.end() && !it->second.empty()) {
        auto op = it->second.front();
        it->second.pop_front();
        if (it->second.empty()) in.posted.erase(it);
        if (op->bytes != inc->total) {
          op->failed = Failure{FailKind::remote, "message size mismatch: " + who(src) + " sent " +
                                                     std::to_string(inc->total) + " bytes, the receiver expected " +
                                                     std::to_string(op->bytes)};
          inc->refused = op->failed->message;  // the sender's send fails too
          inc->discard = true;
          in.cv.notify_all();
        } else {
          inc->target = op;
          op->bound = inc.get();
        }
      } else {
        inc->data.reset(new (std::nothrow) char[inc->total]);
        if (!inc->data && inc->total) return "no memory to hold a " + std::to_string(inc->total) + "-byte message until its receive is posted";
        in.unexpected[c.tag].push_back(inc);
      }
      in.current = inc;
    }
    Incoming* inc = in.current.get();
    if (!inc || c.tag != inc->tag || c.total_bytes != inc->total || c.offset != inc->received ||
        c.size > inc->total - inc->received) {
      return "chunk (tag " + std::to_string(c.tag) + ", offset " + std::to_string(c.offset) + ", " +
             std::to_string(c.size) + " bytes) does not continue the message in progress";
    }
    char* dst = inc->target ? inc->target->dst + inc->received
                            : !inc->discard ? inc->data.get() + inc->received : nullptr;
    if (c.remote) {
      std::string why;
      if (dst && !read_remote(pid, c.remote_address, c.size, dst, c.remote_guard, why)) {
        return "cannot read the chunk at offset " + std::to_string(c.offset) + " of a " +
               std::to_string(c.total_bytes) + "-byte message (tag " + std::to_string(c.tag) +
               ") from its memory: " + why;
      }
    } else if (copy_payload(c, dst) != c.crc32) {
      return "chunk at offset " + std::to_string(c.offset) + " of a " + std::to_string(c.total_bytes) +
             "-byte message (tag " + std::to_string(c.tag) + ") failed its crc32 check";
    }
    inc->received += c.size;
    if (inc->received == inc->total) {
      whole = in.current;
      in.current.reset();
    }
    return "";
  }

  // Starts the next write on the stream to `peer` if it is idle: an abort notice, the next
  // queued message, or (closing) WritesDone. out.mu held. Never blocks: the write completes on
  // the progress thread (on_written), which calls this again.
  void pump(int peer, Outbox& out) {
    if (!out.started || out.writing || out.writes_done) return;
    if (!out.abort_notice.empty()) {
      WireChunk a;
      a.src_rank = static_cast<uint32_t>(opt.rank);
      a.dst_rank = static_cast<uint32_t>(peer);
      a.abort_reason = out.abort_notice;
      out.abort_notice.clear();
      out.writing = &kNotice;
      out.stream->Write(a, &out.on_write);
      return;
    }
    if (!out.queue.empty() && !out.dead) {
      auto op = out.queue.front();
      out.queue.pop_front();
      // Into unacked before the first byte goes out: the ack may beat us back here.
      out.unacked.push_back(op);
      op->remote = remote_send(peer, op->bytes);
      op->seq = out.next_seq++;
      out.writing = op.get();
      out.current = std::move(op);
      out.off = 0;
      write_chunk(peer, out);
      return;
    }
    if (out.stop && out.queue.empty()) {
      out.writes_done = true;
      out.stream->WritesDone(&out.on_writes_done);
    }
  }

  // Writes the chunk of out.current at out.off (out.mu held). A message read from memory is one
  // chunk (it has no payload for gRPC's size limits to apply to); others are cut at chunk_bytes.
  // An eager message is copied into gRPC's buffers by Write(): its send completes with its last
  // chunk's Write, as MPI's eager sends complete once buffered.
  void write_chunk(int peer, Outbox& out) {
    const SendOp& op = *out.current;
    WireChunk c;
    c.src_rank = static_cast<uint32_t>(opt.rank);
    c.dst_rank = static_cast<uint32_t>(peer);
    c.copy = op.bytes <= kEagerBytes;
    c.remote = op.remote;
    c.seq = op.seq;
    const size_t n = op.remote ? op.bytes : std::min(opt.chunk_bytes, op.bytes - out.off);
    c.tag = op.tag;
    c.offset = out.off;
    c.total_bytes = op.bytes;
    c.data = op.data + out.off;  // sent from the caller's buffer, no copy (grpc/wire.h)
    c.remote_address = reinterpret_cast<uintptr_t>(c.data);  // or read from there (remote)
    c.remote_guard = reinterpret_cast<uintptr_t>(&out.given_up);
    c.size = n;
    c.crc32 = c.remote ? 0 : crc32_of(c.data, n);
    out.chunk_len = n;
    out.stream->Write(c, &out.on_write);
    if (c.copy && out.off + n == op.bytes && !op.failed) {
      out.current->done = true;
      out.cv.notify_all();
    }
  }

  // A write on the stream to `peer` completed (ok false: the stream broke, and every operation
  // with the peer fails).
  void on_written(int peer, bool ok) {
    Outbox& out = *outboxes[peer];
    std::lock_guard<std::mutex> lock(out.mu);
    if (!ok) {
      if (out.current && !out.current->done) {
        out.current->failed = Failure{FailKind::network, "connection to " + who(peer) + " lost while sending"};
      }
      out.writing = nullptr;
      out.current.reset();
      out.writes_done = true;  // nothing more can go out
      out.fail_all({FailKind::network, "connection to " + who(peer) + " lost"});
      return;
    }
    if (out.current) {
      out.off += out.chunk_len;
      if (out.off < out.current->bytes && !out.read_done) return write_chunk(peer, out);
      out.current.reset();
    }
    out.writing = nullptr;
    out.cv.notify_all();  // a SendRequest being destroyed waits for its write to be let go
    pump(peer, out);
  }

  // Whether a send goes out as addresses: large, to a peer that reads this process's memory.
  bool remote_send(int peer, size_t bytes) const { return bytes > kEagerBytes && cma_to[peer]; }

  // An ack read from the stream to `peer` (ok false: the stream ended).
  void on_ack(int peer, bool ok) {
    Outbox& out = *outboxes[peer];
    std::lock_guard<std::mutex> lock(out.mu);
    if (!ok) {
      out.fail_all({FailKind::network, "connection to " + who(peer) + " closed (process exited or transport destroyed)"});
      out.read_done = true;
      out.writes_done = true;  // nothing written now would be read
      out.stream->Finish(&out.status, &out.on_finish);
      return;
    }
    const Ack& a = out.ack;
    // Acks name their message (seq): a message read from memory after a late irecv() is
    // acknowledged after the ones behind it.
    auto it = std::find_if(out.unacked.begin(), out.unacked.end(),
                           [&](const std::shared_ptr<SendOp>& op) { return op->seq == a.seq(); });
    if (it != out.unacked.end()) {
      auto op = *it;
      out.unacked.erase(it);
      if (!a.error().empty()) {
        // Refused: a chunk the receiver could not take (it then closes the stream, which fails
        // every later operation here too) or a message of the wrong size for its receive (only
        // this one). An eager send that already completed stays completed.
        if (!op->done) op->failed = Failure{FailKind::remote, who(peer) + " rejected a message: " + a.error()};
      } else {
        op->done = true;
      }
      out.cv.notify_all();
    }
    out.stream->Read(&out.ack, &out.on_read);
  }

  // Opens the stream to `peer` on channel `ch`.
  void open_stream(int peer, const std::shared_ptr<gr::Channel>& ch) {
    Outbox& out = *outboxes[peer];
    out.on_start.on = [this, peer](bool ok) {
      Outbox& o = *outboxes[peer];
      std::lock_guard<std::mutex> lock(o.mu);
      if (!ok) {
        o.writes_done = true;
        o.fail_all({FailKind::network, "cannot open a stream to " + who(peer)});
        o.read_done = true;
        o.stream->Finish(&o.status, &o.on_finish);
        return;
      }
      o.started = true;
      o.stream->Read(&o.ack, &o.on_read);
      pump(peer, o);
    };
    out.on_write.on = [this, peer](bool ok) { on_written(peer, ok); };
    out.on_read.on = [this, peer](bool ok) { on_ack(peer, ok); };
    out.on_writes_done.on = [](bool) {};
    out.on_finish.on = [this, peer](bool) {
      {
        Outbox& o = *outboxes[peer];
        std::lock_guard<std::mutex> lock(o.mu);
        o.finished = true;
        o.cv.notify_all();
      }
      stream_over();
    };
    out.method = std::make_unique<gr::internal::RpcMethod>(kExchangeMethod, gr::internal::RpcMethod::BIDI_STREAMING, ch);
    {
      std::lock_guard<std::mutex> lock(calls_mu);
      ++live;
    }
    std::lock_guard<std::mutex> lock(out.mu);
    out.opened = true;
    out.stream.reset(gr::internal::ClientAsyncReaderWriterFactory<WireChunk, Ack>::Create(
        ch.get(), cq.get(), *out.method, &out.ctx, false, nullptr));
    out.stream->StartCall(&out.on_start);
  }

  // Stops serving and then the progress thread: new streams are refused, open ones are
  // cancelled after 500 ms, and the queue shuts down once every stream is over (nothing may
  // start on it after that). Idempotent.
  void stop_serving() {
    if (!progress_thread.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(calls_mu);
      serving = false;
    }
    if (local) local->stop();
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    std::unique_lock<std::mutex> lock(calls_mu);
    if (!calls_cv.wait_for(lock, std::chrono::seconds(2), [&] { return live == 0; })) {
      lock.unlock();
      for (auto& out : outboxes) out->ctx.TryCancel();
      lock.lock();
      for (auto& call : calls)
        if (call->started) call->ctx.TryCancel();
      // Cancelled operations complete promptly (unless the progress thread is in a long copy):
      // wait for them, since nothing may start on the queue once it is shut down.
      while (!calls_cv.wait_for(lock, std::chrono::seconds(2), [&] { return live == 0; }))
        log::get("comms")->warn("grpc: rank {}: waiting for {} cancelled stream(s) to end", opt.rank, live);
    }
    lock.unlock();
    cq->Shutdown();
    progress_thread.join();
  }
  ~Impl() {
    stop_serving();
    calls.clear();      // server contexts before the server,
    outboxes.clear();   // client streams before the queue
    server.reset();     // and the server before its queue
  }
};

GrpcTransport::GrpcTransport(const GrpcOptions& o) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = o;
  TESSERA_CHECK(o.world_size >= 1 && o.world_size <= kMaxWorld, "grpc transport: a world of ", o.world_size,
                " ranks is out of range 1..", kMaxWorld);
  TESSERA_CHECK(o.rank >= 0 && o.rank < o.world_size, "grpc transport: rank ",
                o.rank, " is outside the world of ", o.world_size);
  TESSERA_CHECK(o.chunk_bytes >= 1 && o.chunk_bytes <= (size_t{1} << 30), "grpc transport: chunk_bytes ",
                o.chunk_bytes, " is out of range 1..2^30");
  auto colon = o.coordinator.rfind(':');
  TESSERA_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < o.coordinator.size(),
                "grpc transport: coordinator address '", o.coordinator, "' is not host:port");
  const size_t n = static_cast<size_t>(o.world_size);
  for (auto* v : {&m.hellos, &m.hello_local, &m.hello_host}) v->assign(n, "");
  m.hello_pid.assign(n, 0);
  m.hello_probe.assign(n, 0);
  m.hello_nonce.assign(n, 0);
  m.reads.assign(n, {});
  for (int r = 0; r < o.world_size; ++r) {
    m.inboxes.push_back(std::make_shared<Inbox>());
    m.outboxes.push_back(std::make_shared<Outbox>());
  }
  const int max_in = static_cast<int>(o.chunk_bytes) + kFraming;
  keep_large_blocks_in_heap();

  // Serve Interconnect (and, on rank 0, the Coordinator at its fixed address).
  gr::ServerBuilder b;
  std::string listen = o.rank == 0 ? o.coordinator : o.bind_host + ":0";
  int port = 0;
  b.AddListeningPort(listen, gr::InsecureServerCredentials(), &port);
  b.SetMaxReceiveMessageSize(max_in);
  // Acks are small; the coordinator's HelloReply carries every rank's addresses (a few hundred
  // bytes each).
  b.SetMaxSendMessageSize(o.rank == 0 ? coordinator_reply_limit(o.world_size) : kFraming);
  tune_http2(b);
  // The Coordinator (rank 0) is synchronous and used only at start-up: one idle poller is
  // enough (gRPC's default keeps up to two per completion queue, and one queue per core).
  b.SetSyncServerOption(gr::ServerBuilder::SyncServerOption::NUM_CQS, 1);
  b.SetSyncServerOption(gr::ServerBuilder::SyncServerOption::MIN_POLLERS, 1);
  b.SetSyncServerOption(gr::ServerBuilder::SyncServerOption::MAX_POLLERS, 1);
  m.exchange = std::make_unique<ExchangeService>();
  b.RegisterService(m.exchange.get());
  if (o.rank == 0) b.RegisterService(static_cast<proto::Coordinator::Service*>(&m));
  m.cq = b.AddCompletionQueue();
  m.server = b.BuildAndStart();
  TESSERA_CHECK_AS(NetworkError, m.server && port > 0, "grpc transport: rank ", o.rank,
                   " cannot listen on ", listen, o.rank == 0 ? " (the coordinator address; is the port in use?)" : "");
  // Early peers may open their streams before this rank's rendezvous is over: serve at once.
  m.progress_thread = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "tsr-progress");
    impl_->progress();
  });
  m.accept_next();
  m.address = (o.rank == 0 ? o.coordinator.substr(0, colon) : o.bind_host) + ":" + std::to_string(port);
  const std::string host = o.unix_local && o.world_size > 1 ? host_id() : "";
  if (!host.empty()) {
    try {
      m.local = std::make_unique<LocalListener>(o.rank, o.socket_buffer_bytes);
      m.local->start(m.server.get());
    } catch (const NetworkError& e) {  // e.g. Unix sockets forbidden here: peers use TCP
      log::get("comms")->warn("grpc: rank {}: {}; co-located peers will use TCP", o.rank, e.what());
      m.local.reset();
    }
  }

  // Rendezvous.
  gr::ChannelArguments small;
  small.SetMaxReceiveMessageSize(coordinator_reply_limit(o.world_size));
  small.SetMaxSendMessageSize(kFraming);
  // Ranks start together, so the coordinator is often not listening yet when a rank first
  // dials it: retry within milliseconds, not after gRPC's default 1 s backoff.
  small.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  small.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  small.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 250);
  auto coord = proto::Coordinator::NewStub(gr::CreateCustomChannel(o.coordinator, gr::InsecureChannelCredentials(), small));
  gr::ClientContext hctx;
  hctx.set_deadline(std::chrono::system_clock::now() + o.connect_timeout);
  hctx.set_wait_for_ready(true);
  proto::HelloRequest req;
  req.set_rank(static_cast<uint32_t>(o.rank));
  req.set_world_size(static_cast<uint32_t>(o.world_size));
  req.set_address(m.address);
  req.set_protocol_version(kProtocolVersion);
  if (m.local) {
    req.set_local_address(m.local->name());
    req.set_host_id(host);
  }
  const bool offer_cma = !host.empty() && o.cma_local;
  if (offer_cma) {
    // Yama (ptrace_scope 1) lets only a process's ancestors read it unless it names a reader;
    // peers are siblings. No-op (EINVAL) without Yama.
#if defined(PR_SET_PTRACER)
    (void)::prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
    m.probe_word = std::random_device{}() * 0x9e3779b97f4a7c15ull ^ (uint64_t{std::random_device{}()} << 17) ^
                   static_cast<uint64_t>(::getpid());
    if (m.probe_word == 0) m.probe_word = 1;
    req.set_pid(static_cast<uint32_t>(::getpid()));
    req.set_probe_address(reinterpret_cast<uintptr_t>(&m.probe_word));
    req.set_probe_nonce(m.probe_word);
  }
  proto::HelloReply reply;
  // A failed round of the rendezvous: stop serving, then TimeoutError (no answer in time) or
  // RemoteError (the coordinator said no, or said something absurd).
  auto rendezvous_failed = [&](const std::string& round, const gr::Status& st, const std::string& why) {
    std::string msg = "grpc transport: rank " + std::to_string(o.rank) + " rendezvous (" + round +
                      ") at coordinator " + o.coordinator + " failed: " + why + " (after at most " +
                      std::to_string(o.connect_timeout.count()) + " ms)";
    m.stop_serving();
    if (st.error_code() == gr::StatusCode::DEADLINE_EXCEEDED || st.error_code() == gr::StatusCode::UNAVAILABLE)
      throw TimeoutError(msg);
    throw RemoteError(msg);
  };
  gr::Status st = coord->Hello(&hctx, req, &reply);
  if (!st.ok()) rendezvous_failed("hello", st, st.error_message());
  TESSERA_CHECK_AS(RemoteError, reply.addresses_size() == o.world_size, "grpc transport: the coordinator sent ",
                   reply.addresses_size(), " addresses for a world of ", o.world_size);
  {
    std::lock_guard<std::mutex> lock(m.names_mu);
    m.addresses.assign(reply.addresses().begin(), reply.addresses().end());
    m.via_unix.assign(static_cast<size_t>(o.world_size), 0);
  }
  m.all_local = reply.host_ids_size() == o.world_size && reply.local_addresses_size() == o.world_size;
  for (int p = 0; p < o.world_size && m.all_local; ++p)
    m.all_local = !reply.host_ids(p).empty() && reply.host_ids(p) == reply.host_ids(0) && !reply.local_addresses(p).empty();

  // Second round: read every co-located peer's probe word, tell the coordinator which worked,
  // learn which peers can read this rank. Decided before any stream opens, the same on every rank.
  proto::RoutesRequest rreq;
  rreq.set_rank(static_cast<uint32_t>(o.rank));
  {
    std::lock_guard<std::mutex> lock(m.names_mu);
    m.cma_from.assign(n, 0);
    m.cma_to.assign(n, 0);
    m.peer_pid.assign(n, 0);
    for (int p = 0; p < o.world_size; ++p) {
      bool readable = false;
      if (offer_cma && p != o.rank && reply.pids_size() == o.world_size && reply.probe_addresses_size() == o.world_size &&
          reply.probe_nonces_size() == o.world_size && reply.host_ids_size() == o.world_size && reply.pids(p) != 0 &&
          reply.host_ids(p) == host) {
        uint64_t word = 0;
        std::string why;
        readable = read_remote(static_cast<int>(reply.pids(p)), reply.probe_addresses(p), sizeof word,
                               reinterpret_cast<char*>(&word), 0, why) &&
                   word == reply.probe_nonces(p);
        if (!readable)
          log::get("comms")->warn("grpc: rank {} cannot read rank {}'s memory ({}); its large messages come over the socket",
                                  o.rank, p, why.empty() ? "wrong probe word: another pid namespace?" : why);
        m.peer_pid[p] = readable ? static_cast<int>(reply.pids(p)) : 0;
      }
      m.cma_from[p] = readable;
      rreq.add_reads(readable);
    }
  }
  proto::RoutesReply routes;
  gr::ClientContext rctx;
  rctx.set_deadline(std::chrono::system_clock::now() + o.connect_timeout);
  rctx.set_wait_for_ready(true);
  st = coord->Routes(&rctx, rreq, &routes);
  if (!st.ok()) rendezvous_failed("routes", st, st.error_message());
  if (routes.read_by_size() != o.world_size)
    rendezvous_failed("routes", st, "a reply of " + std::to_string(routes.read_by_size()) + " entries");
  m.all_cma = routes.every_pair();
  {
    std::lock_guard<std::mutex> lock(m.names_mu);
    for (int p = 0; p < o.world_size; ++p) m.cma_to[p] = p != o.rank && routes.read_by(p);
  }

  // One stream to every peer, opened now so that a peer's death is seen on every connection.
  gr::ChannelArguments args;
  args.SetMaxSendMessageSize(max_in);
  args.SetMaxReceiveMessageSize(kFraming * 16);
  tune_http2(args);
  for (int p = 0; p < o.world_size; ++p) {
    if (p == o.rank) continue;
    std::shared_ptr<gr::Channel> ch;
    if (m.local && reply.host_ids_size() == o.world_size && reply.host_ids(p) == host &&
        !reply.local_addresses(p).empty()) {
      std::string why;
      ch = connect_local(reply.local_addresses(p), o.socket_buffer_bytes, args, why);
      if (ch) {
        std::lock_guard<std::mutex> lock(m.names_mu);
        m.via_unix[p] = 1;
      }
      else log::get("comms")->warn("grpc: rank {} cannot reach {} over its Unix socket ({}); using TCP", o.rank, m.who(p), why);
    }
    if (!ch) ch = gr::CreateCustomChannel(m.addresses[p], gr::InsecureChannelCredentials(), args);
    m.channels.push_back(ch);
    m.open_stream(p, ch);
  }
  int unix_peers = 0, cma_peers = 0;
  for (int p = 0; p < o.world_size; ++p) {
    unix_peers += route(p) == "unix";
    cma_peers += route(p) == "cma";
  }
  log::get("comms")->debug("grpc: rank {} of {} at {}; of {} peers, {} read its large messages from its memory, {} more use a Unix socket",
                           o.rank, o.world_size, m.address, o.world_size - 1, cma_peers, unix_peers);
}

GrpcTransport::~GrpcTransport() {
  Impl& m = *impl_;
  auto peers = [&](auto&& fn) {
    for (int p = 0; p < m.opt.world_size; ++p)
      if (p != m.opt.rank) fn(*m.outboxes[p]);
  };
  for (int p = 0; p < m.opt.world_size; ++p) {
    if (p == m.opt.rank) continue;
    Outbox& out = *m.outboxes[p];
    std::lock_guard<std::mutex> lock(out.mu);
    out.stop = true;
    m.pump(p, out);
  }
  // Each stream closes once its queue is written; the peer ends it once it has read everything
  // (acknowledged), which ends our ack stream. A peer that does not answer in time gets its
  // stream cancelled. Then the streams to us end, and the progress thread.
  auto deadline = Clock::now() + std::chrono::seconds(2);
  peers([&](Outbox& out) {
    std::unique_lock<std::mutex> lock(out.mu);
    if (!out.cv.wait_until(lock, deadline, [&] { return out.finished || !out.opened; })) out.ctx.TryCancel();
  });
  m.stop_serving();
}

int GrpcTransport::rank() const { return impl_->opt.rank; }
int GrpcTransport::size() const { return impl_->opt.world_size; }
const std::string& GrpcTransport::address() const { return impl_->address; }
std::string GrpcTransport::peer_name(int peer) const { return impl_->who(peer); }
double GrpcTransport::alpha() const { return impl_->all_local ? 43e-6 : 51e-6; }
double GrpcTransport::beta() const { return impl_->all_cma ? 4.3e9 : impl_->all_local ? 2.0e9 : 1.5e9; }

size_t GrpcTransport::segment_bytes() const { return impl_->all_cma ? size_t{4} << 20 : size_t{1} << 20; }

std::string GrpcTransport::route(int peer) const {
  TESSERA_CHECK_INDEX(peer >= 0 && peer < impl_->opt.world_size, "grpc: peer rank ", peer,
                      " is outside the world of ", impl_->opt.world_size);
  std::lock_guard<std::mutex> lock(impl_->names_mu);
  const size_t p = static_cast<size_t>(peer);
  if (peer == impl_->opt.rank) return "self";
  if (p < impl_->cma_to.size() && impl_->cma_to[p]) return "cma";
  return p < impl_->via_unix.size() && impl_->via_unix[p] ? "unix" : "tcp";
}

RequestPtr GrpcTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  Impl& m = *impl_;
  TESSERA_CHECK_INDEX(peer >= 0 && peer < m.opt.world_size && peer != m.opt.rank, "grpc: peer rank ", peer,
                      " is not another rank of the world of ", m.opt.world_size);
  if (m.aborted) return std::make_unique<FailedRequest>(Failure{FailKind::comm, "transport aborted: " + m.abort_reason});
  auto out = m.outboxes[peer];
  auto op = std::make_shared<SendOp>();
  op->data = static_cast<const char*>(data);
  op->bytes = bytes;
  op->tag = tag;
  // Written here if the stream is idle (no thread hand-off), else when the writes before it
  // have completed (by the progress thread).
  {
    std::lock_guard<std::mutex> lock(out->mu);
    if (out->dead) return std::make_unique<FailedRequest>(*out->dead);
    out->queue.push_back(op);
    m.pump(peer, *out);
  }
  return std::make_unique<SendRequest>(out, op);
}

RequestPtr GrpcTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  Impl& m = *impl_;
  TESSERA_CHECK_INDEX(peer >= 0 && peer < m.opt.world_size && peer != m.opt.rank, "grpc: peer rank ", peer,
                      " is not another rank of the world of ", m.opt.world_size);
  if (m.aborted) return std::make_unique<FailedRequest>(Failure{FailKind::comm, "transport aborted: " + m.abort_reason});
  auto in = m.inboxes[peer];
  auto op = std::make_shared<RecvOp>();
  op->dst = static_cast<char*>(data);
  op->bytes = bytes;
  std::unique_lock<std::mutex> lock(in->mu);
  auto it = in->unexpected.find(tag);
  if (it != in->unexpected.end() && !it->second.empty()) {
    auto inc = it->second.front();
    it->second.pop_front();
    if (it->second.empty()) in->unexpected.erase(it);
    if (inc->deferred) return m.receive_deferred(peer, *inc, std::move(lock), in, tag, op);
    // Cut off mid-message by the sender's failure: the rest will never come.
    if (in->dead && inc->received < inc->total) return std::make_unique<FailedRequest>(*in->dead);
    if (inc->total != bytes) {
      inc->discard = true;
      inc->data.reset();
      return std::make_unique<FailedRequest>(Failure{
          FailKind::remote, "message size mismatch: " + m.who(peer) + " sent " + std::to_string(inc->total) +
                                " bytes, the receiver expected " + std::to_string(bytes)});
    }
    if (inc->received) std::memcpy(op->dst, inc->data.get(), inc->received);
    inc->data.reset();
    if (inc->received == inc->total && inc->acked) {
      op->done = true;
    } else {  // the rest of the bytes, or the ack, is still to come: the progress thread completes it
      inc->target = op;
      op->bound = inc.get();
    }
    return std::make_unique<RecvRequest>(in, tag, op);
  }
  if (in->dead) return std::make_unique<FailedRequest>(*in->dead);
  in->posted[tag].push_back(op);
  return std::make_unique<RecvRequest>(in, tag, op);
}

void GrpcTransport::abort(const std::string& reason) {
  Impl& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.abort_mu);
    if (m.aborted) return;
    m.abort_reason = reason;  // before the flag: isend()/irecv() read it once they see the flag
    m.aborted = true;
  }
  Failure self{FailKind::comm, "transport aborted: " + reason};
  for (int p = 0; p < m.opt.world_size; ++p) {
    if (p == m.opt.rank) continue;
    {
      Outbox& out = *m.outboxes[p];
      std::lock_guard<std::mutex> lock(out.mu);
      out.abort_notice = reason.empty() ? "(no reason given)" : reason;
      // Every send not yet complete fails now: queued, being written, or written and waiting
      // for its ack (an ack arriving later finds nothing to complete). Their requests'
      // destructors still wait for gRPC to let go of a buffer being written or read.
      for (auto& op : out.queue) op->failed = self;
      out.queue.clear();
      bool read_remotely = false;  // the peer may be reading one of them from this memory
      for (auto& op : out.unacked) {
        if (!op->done) op->failed = self;
        read_remotely = read_remotely || op->remote;
      }
      out.unacked.clear();
      if (out.current && !out.current->done && !out.current->failed) {
        out.current->failed = self;
        read_remotely = read_remotely || out.current->remote;
      }
      // Their owners may reuse the buffers as soon as they see the failure: a read under way
      // must then refuse what it read (wire.h, remote_guard).
      if (read_remotely) give_up(out.given_up);
      out.cv.notify_all();
      m.pump(p, out);
    }
    Inbox& in = *m.inboxes[p];
    std::lock_guard<std::mutex> lock(in.mu);
    in.fail_all(self);
  }
}

}  // namespace tessera::comms::grpc
