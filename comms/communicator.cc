#include <tessera/comms/communicator.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <system_error>
#include <thread>

namespace tessera::comms {

namespace {
constexpr int kSubtagBits = 4;

// Thrown in sibling node threads once one node of the call has failed; never escapes run().
struct Cancelled {};

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long long x = std::strtoll(v, &end, 10);
  TESSERA_CHECK(end && *end == 0 && x > 0, name, "='", v, "' is not a positive integer");
  return x;
}
}  // namespace

namespace {

class ConsumingRequest : public Request {
 public:
  ConsumingRequest(RequestPtr inner, const void* buf, Transport::Consume fn)
      : inner_(std::move(inner)), buf_(buf), fn_(std::move(fn)) {}
  bool test() override { return done_ || (inner_->test() && finish()); }
  bool wait(Deadline deadline) override { return done_ || (inner_->wait(deadline) && finish()); }

 private:
  bool finish() {
    done_ = true;
    fn_(buf_);
    return true;
  }
  RequestPtr inner_;
  const void* buf_;
  Transport::Consume fn_;
  bool done_ = false;
};

}  // namespace

namespace {

class PrivateMemory : public SharedMemory {
 public:
  PrivateMemory(void* p, size_t len, size_t bytes) : p_(p), len_(len), bytes_(bytes) {}
  ~PrivateMemory() override { munmap(p_, len_); }
  void* data() const override { return p_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* p_;
  size_t len_, bytes_;
};

}  // namespace

std::shared_ptr<SharedMemory> allocate_private(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) TESSERA_THROW(OutOfMemoryError, "cannot map ", len, " bytes of communication memory");
  return std::make_shared<PrivateMemory>(p, len, bytes);
}

RequestPtr consume_on_completion(RequestPtr inner, const void* buf, Transport::Consume consume) {
  return std::make_unique<ConsumingRequest>(std::move(inner), buf, std::move(consume));
}

std::chrono::milliseconds default_comm_timeout() {
  return std::chrono::milliseconds(env_int("TESSERA_COMM_TIMEOUT_MS", 60000));
}

const char* scope_name(Scope s) {
  static const char* names[] = {"world", "rows", "cols"};
  return names[static_cast<int>(s)];
}

// ---- Group ---------------------------------------------------------------------------------

int Group::rows() const { return scope_ == Scope::rows ? 1 : comm_->mesh().rows(); }
int Group::cols() const { return scope_ == Scope::cols ? 1 : comm_->mesh().cols(); }

int Group::member_of(int node) const {
  int c = comm_->mesh().cols();
  switch (scope_) {
    case Scope::world: return node;
    case Scope::rows: return node % c;
    case Scope::cols: return node / c;
  }
  return 0;
}

int Group::node_of(int any, int member) const {
  int c = comm_->mesh().cols();
  switch (scope_) {
    case Scope::world: return member;
    case Scope::rows: return (any / c) * c + member;
    case Scope::cols: return member * c + any % c;
  }
  return 0;
}

// ---- NodeCtx -------------------------------------------------------------------------------

NodeCtx::Pending NodeCtx::send(int dst, int subtag, const void* data, size_t bytes) {
  MeshComm& c = op_.comm;
  op_.charges.add(c.mesh(), node_, dst, bytes);
  uint64_t tag = (op_.tag << kSubtagBits) | static_cast<uint64_t>(subtag);
  Pending p{nullptr, dst, true, bytes};
  try {
    p.req = c.fabric().isend(node_, dst, tag, data, bytes);
  } catch (const CommError& e) {
    fail(p, &e, false);
  }
  return p;
}

NodeCtx::Pending NodeCtx::recv(int src, int subtag, void* data, size_t bytes, Transport::Consume consume) {
  MeshComm& c = op_.comm;
  uint64_t tag = (op_.tag << kSubtagBits) | static_cast<uint64_t>(subtag);
  Pending p{nullptr, src, false, bytes};
  try {
    p.req = c.fabric().irecv(node_, src, tag, data, bytes, std::move(consume));
  } catch (const CommError& e) {
    fail(p, &e, false);
  }
  return p;
}

void NodeCtx::wait(Pending& p) {
  if (!p.req) return;
  // Wait in slices so that a failure of a sibling node ends this one promptly.
  constexpr auto kSlice = std::chrono::milliseconds(20);
  for (;;) {
    if (op_.cancelled.load(std::memory_order_relaxed)) throw Cancelled{};
    auto now = Clock::now();
    if (now >= op_.deadline) {
      bool done = false;
      try {
        done = p.req->test();
      } catch (const CommError& e) {
        fail(p, &e, false);
      }
      if (done) break;
      fail(p, nullptr, true);
    }
    bool done = false;
    try {
      done = p.req->wait(std::min(op_.deadline, now + kSlice));
    } catch (const CommError& e) {
      fail(p, &e, false);
    }
    if (done) break;
  }
  p.req.reset();
}

void NodeCtx::wait_all(std::vector<Pending>& ps) {
  for (auto& p : ps) wait(p);
  ps.clear();
}

void NodeCtx::fail(const Pending& p, const std::exception* cause, bool timed_out) {
  MeshComm& c = op_.comm;
  const Mesh& m = c.mesh();
  int peer_rank = c.placement().rank_of(p.peer);
  std::string where = op_.name + " on rank " + std::to_string(c.rank()) + ", node " +
                      to_string(m.coord(node_));
  std::string what = (p.is_send ? "sending " : "receiving ") + std::to_string(p.bytes) +
                     " bytes " + (p.is_send ? "to " : "from ") +
                     (c.hosts(p.peer) ? std::string("this rank") : c.transport().peer_name(peer_rank)) +
                     ", node " + to_string(m.coord(p.peer)) + " (tag " + std::to_string(op_.tag) + ")";
  if (timed_out) {
    throw TimeoutError(where + ": timed out after " + std::to_string(op_.timeout.count()) +
                       " ms " + what);
  }
  std::string msg = where + ": failed " + what + ": " + (cause ? cause->what() : "unknown error");
  if (dynamic_cast<const TimeoutError*>(cause)) throw TimeoutError(msg);
  if (dynamic_cast<const NetworkError*>(cause)) throw NetworkError(msg);
  if (dynamic_cast<const RemoteError*>(cause)) throw RemoteError(msg);
  throw CommError(msg);
}

// ---- MeshComm ------------------------------------------------------------------------------

namespace {
std::shared_ptr<Transport> non_null(std::shared_ptr<Transport> t) {
  TESSERA_CHECK(t != nullptr, "MeshComm: the transport is null");
  return t;
}

Placement make_placement(const Mesh& mesh, const Transport& t, const CommOptions& o) {
  if (o.rank_grid_rows || o.rank_grid_cols) {
    Placement p = Placement::make(mesh, o.rank_grid_rows, o.rank_grid_cols);
    TESSERA_CHECK(p.ranks == t.size(), "a ", o.rank_grid_rows, "x", o.rank_grid_cols,
                  " grid of ranks needs ", p.ranks, " ranks, the ", t.name(), " transport has ",
                  t.size());
    return p;
  }
  return Placement::make(mesh, t.size());
}
}  // namespace

MeshComm::MeshComm(Mesh mesh, std::shared_ptr<Transport> transport, CommOptions options)
    : mesh_(std::move(mesh)),
      transport_(non_null(std::move(transport))),
      options_(options),
      placement_(make_placement(mesh_, *transport_, options_)),
      fabric_(placement_, transport_),
      local_nodes_(placement_.nodes_of(transport_->rank())),
      stats_(mesh_) {
  if (options_.timeout.count() <= 0) {
    options_.timeout = default_comm_timeout();
  }
  if (options_.chunk_bytes == 0) {
    options_.chunk_bytes = static_cast<size_t>(env_int("TESSERA_CHUNK_BYTES", static_cast<int>(transport_->segment_bytes())));
  }
  log::get("comms")->debug("rank {}: mesh {} over {} ({}), transport {}", rank(), mesh_.name(),
                           placement_.describe(), transport_->name(), transport_->name());
}

MeshComm::~MeshComm() = default;

void MeshComm::keep_until_done(std::shared_ptr<void> data, RequestPtr req) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < detached_.size();) {
    bool done = true;
    try {
      done = detached_[i].second->test();
    } catch (const CommError&) {
    }
    if (done) {
      detached_[i] = std::move(detached_.back());
      detached_.pop_back();
    } else {
      ++i;
    }
  }
  detached_.emplace_back(std::move(data), std::move(req));
}

int MeshComm::local_index(int node) const {
  TESSERA_CHECK_INDEX(hosts(node), "node ", to_string(mesh_.coord(node)), " is not hosted by rank ",
                      rank(), " (it hosts ", local_nodes_.size(), " nodes from ",
                      to_string(placement_.block_origin(rank())), ")");
  return placement_.local_index(node);
}

uint64_t MeshComm::max_user_tag() const { return (fabric_.max_tag() >> kSubtagBits) - 1; }

std::chrono::milliseconds MeshComm::timeout_or_default(std::chrono::milliseconds t) const {
  TESSERA_CHECK(t.count() >= 0, "timeout must not be negative (got ", t.count(), " ms)");
  return t.count() > 0 ? t : options_.timeout;
}

size_t MeshComm::chunk_bytes_or_default(size_t b) const { return b ? b : options_.chunk_bytes; }

void MeshComm::check_usable() const {
  if (!broken_.load()) return;
  std::lock_guard<std::mutex> lock(mu_);
  throw CommError("this communicator (rank " + std::to_string(rank()) +
                  ") is unusable after an earlier communication error: " + broken_reason_ +
                  "; build a new transport and communicator");
}

void MeshComm::on_comm_error(const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.exchange(true)) return;
    broken_reason_ = what;
  }
  fabric_.close({FailKind::comm, "communicator failed: " + what});
  try {
    transport_->abort(what);
  } catch (const std::exception& e) {
    log::get("comms")->warn("rank {}: abort after a communication error failed: {}", rank(), e.what());
  }
}

CollectiveRecord MeshComm::finish(CollectiveRecord rec, OpContext& op, double latency_s,
                                  Clock::time_point t0) {
  rec.measured_s = std::chrono::duration<double>(Clock::now() - t0).count();
  return stats_.record(std::move(rec), op.charges, latency_s);
}

CollectiveRecord MeshComm::run(CollectiveRecord rec, OpContext& op, double latency_s,
                               const std::function<void(NodeCtx&)>& per_node) {
  check_usable();
  auto t0 = Clock::now();
  size_t n = local_nodes_.size();
  std::exception_ptr first;
  std::mutex first_mu;
  auto body = [&](size_t i) {
    try {
      NodeCtx ctx(op, local_nodes_[i], static_cast<int>(i));
      per_node(ctx);
    } catch (const Cancelled&) {
    } catch (...) {
      std::lock_guard<std::mutex> lock(first_mu);
      if (!first) first = std::current_exception();
      op.cancelled = true;
    }
  };
  if (n == 1) {
    body(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(n - 1);
    try {
      for (size_t i = 1; i < n; ++i) threads.emplace_back(body, i);
    } catch (const std::system_error& e) {
      // The nodes of a call wait on each other, so a partial set would only time out.
      op.cancelled = true;
      for (auto& t : threads) t.join();
      std::string what = op.name + " on rank " + std::to_string(rank()) + ": this rank hosts " +
                         std::to_string(n) + " nodes and runs each as a thread; thread " +
                         std::to_string(threads.size() + 1) + " could not be started (" + e.what() +
                         "); spread the mesh over more ranks";
      on_comm_error(what);  // the threads that did start may have messages in flight
      throw OutOfMemoryError(what);
    }
    body(0);
    for (auto& t : threads) t.join();
  }
  if (first) {
    try {
      std::rethrow_exception(first);
    } catch (const CommError& e) {
      on_comm_error(e.what());
      throw;
    }
  }
  return finish(std::move(rec), op, latency_s, t0);
}

CollectiveRecord MeshComm::run_rank(CollectiveRecord rec, OpContext& op, double latency_s,
                                    const std::function<void()>& fn) {
  check_usable();
  auto t0 = Clock::now();
  try {
    fn();
  } catch (const CommError& e) {
    on_comm_error(e.what());
    throw;
  }
  return finish(std::move(rec), op, latency_s, t0);
}

// ---- gather_link_stats ---------------------------------------------------------------------

LinkStats gather_link_stats(MeshComm& comm, std::chrono::milliseconds timeout) {
  OpContext op(comm, "gather_link_stats", comm.max_user_tag() + 1, comm.timeout_or_default(timeout));
  LinkStats out = comm.link_stats();
  int anchor = comm.local_nodes().front();
  CollectiveRecord rec;
  rec.kind = OpKind::internal;
  rec.algorithm = "gather";
  rec.scope = "world";
  // Each rank's first node sends (size, bytes) to rank 0's first node.
  int root = comm.placement().nodes_of(0).front();
  comm.run_rank(rec, op, 0, [&] {
    NodeCtx ctx(op, anchor, 0);
    if (comm.rank() != 0) {
      std::string blob = out.serialize();
      uint64_t size = blob.size();
      auto a = ctx.send(root, 0, &size, sizeof size);
      auto b = ctx.send(root, 1, blob.data(), blob.size());
      ctx.wait(a);
      ctx.wait(b);
      return;
    }
    for (int r = 1; r < comm.ranks(); ++r) {
      int src = comm.placement().nodes_of(r).front();
      uint64_t size = 0;
      auto a = ctx.recv(src, 0, &size, sizeof size);
      ctx.wait(a);
      TESSERA_CHECK_AS(RemoteError, size < (uint64_t{1} << 34), "rank ", r,
                       " announced link stats of ", size, " bytes");
      std::string blob(size, '\0');
      auto b = ctx.recv(src, 1, blob.data(), blob.size());
      ctx.wait(b);
      out.merge(LinkStats::deserialize(comm.mesh(), blob));
    }
  });
  return out;
}

}  // namespace tessera::comms
