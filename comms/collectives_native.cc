// The native algorithm: MPI's own collectives on the ranks (mpi transport only). The nodes a
// rank hosts are combined in memory first. Non-blocking MPI collectives (MPI_Iallreduce, ...)
// are polled against the deadline, so native calls keep the deadline contract.
#include <tessera/comms/collectives_impl.h>
#include <tessera/core/error.h>

#if defined(TESSERA_WITH_MPI)
#include <tessera/comms/mpi/transport.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <thread>
#endif

namespace tessera::comms::detail {

#if !defined(TESSERA_WITH_MPI)

bool native_available(MeshComm&) { return false; }
namespace {
[[noreturn]] void unavailable() {
  TESSERA_THROW(NotImplementedError, "the native algorithm needs the mpi transport; this build has no MPI");
}
}  // namespace
void native_allreduce(MeshComm&, const Group&, const AllreduceOptions&) { unavailable(); }
void native_reduce_scatter(MeshComm&, const Group&, const ReduceScatterOptions&) { unavailable(); }
void native_allgather(MeshComm&, const Group&, const AllgatherOptions&) { unavailable(); }
void native_broadcast(MeshComm&, const Group&, const BroadcastOptions&) { unavailable(); }
void native_barrier(MeshComm&, std::chrono::milliseconds) { unavailable(); }

#else

namespace {

struct NativeState {
  mpi::MpiTransport* t = nullptr;
  std::timed_mutex call_mu;  // held by the rank's native collective in progress
  MPI_Comm rows = MPI_COMM_NULL, cols = MPI_COMM_NULL;
  MPI_Op bf16_ops[4] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  MPI_Op cfp8_ops[4] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
  ~NativeState() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    for (MPI_Comm* c : {&rows, &cols})
      if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
    for (auto* ops : {bf16_ops, cfp8_ops})
      for (int i = 0; i < 4; ++i)
        if (ops[i] != MPI_OP_NULL) MPI_Op_free(&ops[i]);
  }
};

// MPI user ops cannot carry context: the element type of the running reduction lives here,
// and native reductions of bf16/cfp8 are serialized by g_user_op_mu.
std::mutex g_user_op_mu;
ElemType g_elem;
ReduceOp g_op = ReduceOp::sum;

void user_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  reduce(g_op, g_elem, in, inout, inout, static_cast<size_t>(*len));
}

struct Lock {
  std::mutex* m;
  explicit Lock(std::mutex* mu) : m(mu) { if (m) m->lock(); }
  ~Lock() { if (m) m->unlock(); }
};

// "ranks 0, 1, 2 and 3": the ranks of this rank's group of `scope`.
std::string ranks_of(MeshComm& c, Scope scope) {
  const Placement& p = c.placement();
  const int r = c.rank();
  std::vector<int> ranks;
  for (int q = 0; q < p.ranks; ++q) {
    bool same_row = q / p.grid_cols == r / p.grid_cols, same_col = q % p.grid_cols == r % p.grid_cols;
    if (scope == Scope::world || (scope == Scope::rows && same_row) || (scope == Scope::cols && same_col))
      ranks.push_back(q);
  }
  std::string out = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i)
    out += (i == 0 ? "" : i + 1 == ranks.size() ? " and " : ", ") + std::to_string(ranks[i]);
  return out;
}

// Polls a non-blocking MPI collective of the group of `scope` against the deadline. A timeout
// names the group's ranks: MPI cannot say which is late.
void wait_native(MeshComm& c, mpi::MpiTransport* t, MPI_Request& req, Deadline deadline, const std::string& call,
                 std::chrono::milliseconds timeout, Scope scope) {
  if (mpi::test_until(req, deadline, t->serial(), call)) return;
  throw TimeoutError(call + " on rank " + std::to_string(c.rank()) + ": timed out after " +
                     std::to_string(timeout.count()) + " ms: not every rank of " + ranks_of(c, scope) +
                     " took part in time (MPI's collectives cannot say which; the ring and mesh2d algorithms name the peer)");
}

std::mutex g_state_mu;  // guards every communicator's native_state() slot

// Every native collective runs inside one NativeCall. It creates the communicator's native
// state on first use and holds the state's call mutex, so that a rank never has two MPI
// collectives in flight on one communicator from two threads (MPI forbids it). Calls must
// still be started in the same order on every rank, as MPI requires.
class NativeCall {
 public:
  NativeCall(MeshComm& c, const Group& g, const char* what, std::chrono::milliseconds timeout)
      : c_(c), g_(g), what_(what), timeout_(timeout), deadline_(Clock::now() + timeout),
        s_(create(c, what, deadline_, timeout)), lock_(s_.call_mu, std::defer_lock) {
    if (!lock_.try_lock_until(deadline_)) {
      throw TimeoutError(std::string(what) + "(native) on rank " + std::to_string(c.rank()) + ": timed out after " +
                         std::to_string(timeout.count()) +
                         " ms waiting for another native collective of this rank to finish");
    }
  }
  NativeState& state() { return s_; }
  MPI_Comm comm() const {
    switch (g_.scope()) {
      case Scope::rows: return s_.rows;
      case Scope::cols: return s_.cols;
      default: return s_.t->comm();
    }
  }
  // Polls `req` (an MPI call named `call`) against the deadline.
  void wait(MPI_Request& req, const char* call) {
    wait_native(c_, s_.t, req, deadline_, std::string(what_) + "(native): " + call, timeout_, g_.scope());
  }

 private:
  static NativeState& create(MeshComm& c, const char* what, Deadline deadline, std::chrono::milliseconds timeout) {
    std::lock_guard<std::mutex> lock(g_state_mu);
    auto& slot = c.native_state();
    if (slot) return *static_cast<NativeState*>(slot.get());
    auto* t = dynamic_cast<mpi::MpiTransport*>(&c.transport());
    TESSERA_INTERNAL_ASSERT(t != nullptr, "native collectives without the mpi transport");
    auto s = std::make_shared<NativeState>();
    s->t = t;
    // MPI_Comm_split has no deadline: split only once every rank has arrived here, which a
    // non-blocking barrier polled against the deadline shows.
    MPI_Request arrived;
    int rc;
    {
      Lock l(t->serial());
      rc = MPI_Ibarrier(t->comm(), &arrived);
    }
    TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, what, "(native): MPI_Ibarrier failed: ",
                     mpi::MpiTransport::error_string(rc));
    wait_native(c, t, arrived, deadline, std::string(what) + "(native): MPI_Ibarrier before the first MPI_Comm_split",
                timeout, Scope::world);
    const Placement& p = c.placement();
    int r = c.rank();
    Lock l(t->serial());
    MPI_Comm_split(t->comm(), r / p.grid_cols, r % p.grid_cols, &s->rows);
    MPI_Comm_split(t->comm(), r % p.grid_cols, r / p.grid_cols, &s->cols);
    for (int i = 0; i < 4; ++i) {
      MPI_Op_create(user_reduce, 1, &s->bf16_ops[i]);
      MPI_Op_create(user_reduce, 1, &s->cfp8_ops[i]);
    }
    slot = s;
    return *s;
  }

  MeshComm& c_;
  const Group& g_;
  const char* what_;
  std::chrono::milliseconds timeout_;
  Deadline deadline_;
  NativeState& s_;
  std::unique_lock<std::timed_mutex> lock_;
};

MPI_Datatype mpi_type(const ElemType& t) {
  switch (t.dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::bf16: return MPI_UINT16_T;
    default: return MPI_UINT8_T;
  }
}

MPI_Op mpi_op(NativeState& s, const ElemType& t, ReduceOp op) {
  if (t.dtype == DType::f32) {
    switch (op) {
      case ReduceOp::sum: return MPI_SUM;
      case ReduceOp::prod: return MPI_PROD;
      case ReduceOp::min: return MPI_MIN;
      case ReduceOp::max: return MPI_MAX;
    }
  }
  const MPI_Op* ops = t.dtype == DType::bf16 ? s.bf16_ops : s.cfp8_ops;
  return ops[static_cast<unsigned>(op) & 3u];  // ReduceOp has 4 values
}

int mpi_count(size_t n, const char* what) {
  TESSERA_CHECK(n <= static_cast<size_t>(INT_MAX), what, ": ", n,
                " elements is above MPI's per-call limit of ", INT_MAX);
  return static_cast<int>(n);
}

// The local indices of hosted nodes, grouped by the group they belong to (in local order).
std::vector<std::vector<int>> local_groups(MeshComm& c, const Group& g) {
  std::vector<std::vector<int>> out;
  std::vector<int> keys;
  for (size_t i = 0; i < c.local_nodes().size(); ++i) {
    int node = c.local_nodes()[i];
    int key = g.node_of(node, 0);
    auto it = std::find(keys.begin(), keys.end(), key);
    if (it == keys.end()) {
      keys.push_back(key);
      out.push_back({static_cast<int>(i)});
    } else {
      out[static_cast<size_t>(it - keys.begin())].push_back(static_cast<int>(i));
    }
  }
  return out;
}

void require_one_node_per_rank(MeshComm& c, const char* what) {
  TESSERA_CHECK_AS(NotImplementedError, c.placement().nodes_per_rank() == 1, what,
                   ": the native algorithm needs one node per rank (this rank hosts ",
                   c.placement().nodes_per_rank(), "); use ring or mesh2d");
}

}  // namespace

bool native_available(MeshComm& c) {
  return dynamic_cast<mpi::MpiTransport*>(&c.transport()) != nullptr;
}

void native_allreduce(MeshComm& c, const Group& g, const AllreduceOptions& o) {
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  if (o.count == 0) return;
  int n = mpi_count(o.count, "allreduce");
  NativeCall call(c, g, "allreduce", c.timeout_or_default(o.timeout));
  MPI_Comm comm = call.comm();
  int comm_size = 1;
  MPI_Comm_size(comm, &comm_size);
  std::unique_lock<std::mutex> user_lock(g_user_op_mu, std::defer_lock);
  if (t.dtype != DType::f32) {
    user_lock.lock();
    g_elem = t;
    g_op = o.op;
  }
  for (const auto& locals : local_groups(c, g)) {
    void* acc = o.outputs[locals[0]];
    if (acc != o.inputs[locals[0]]) std::memcpy(acc, o.inputs[locals[0]], o.count * t.size);
    for (size_t k = 1; k < locals.size(); ++k) reduce(o.op, t, acc, o.inputs[locals[k]], acc, o.count);
    if (comm_size > 1) {
      MPI_Request req;
      int rc;
      {
        Lock lock(call.state().t->serial());
        rc = MPI_Iallreduce(MPI_IN_PLACE, acc, n, mpi_type(t), mpi_op(call.state(), t, o.op), comm, &req);
      }
      TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Iallreduce failed: ",
                       mpi::MpiTransport::error_string(rc));
      call.wait(req, "MPI_Iallreduce");
    }
    for (size_t k = 1; k < locals.size(); ++k) std::memcpy(o.outputs[locals[k]], acc, o.count * t.size);
  }
}

void native_reduce_scatter(MeshComm& c, const Group& g, const ReduceScatterOptions& o) {
  require_one_node_per_rank(c, "reduce_scatter");
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  if (o.count == 0) return;
  int n = mpi_count(o.count, "reduce_scatter");
  mpi_count(o.count * static_cast<size_t>(g.size()), "reduce_scatter");
  NativeCall call(c, g, "reduce_scatter", c.timeout_or_default(o.timeout));
  std::unique_lock<std::mutex> user_lock(g_user_op_mu, std::defer_lock);
  if (t.dtype != DType::f32) {
    user_lock.lock();
    g_elem = t;
    g_op = o.op;
  }
  MPI_Request req;
  int rc;
  {
    Lock lock(call.state().t->serial());
    rc = MPI_Ireduce_scatter_block(o.inputs[0], o.outputs[0], n, mpi_type(t), mpi_op(call.state(), t, o.op),
                                   call.comm(), &req);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Ireduce_scatter_block failed: ",
                   mpi::MpiTransport::error_string(rc));
  call.wait(req, "MPI_Ireduce_scatter_block");
}

void native_allgather(MeshComm& c, const Group& g, const AllgatherOptions& o) {
  require_one_node_per_rank(c, "allgather");
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  if (o.count == 0) return;
  int n = mpi_count(o.count * t.size, "allgather");
  mpi_count(o.count * t.size * static_cast<size_t>(g.size()), "allgather");
  NativeCall call(c, g, "allgather", c.timeout_or_default(o.timeout));
  MPI_Request req;
  int rc;
  {
    Lock lock(call.state().t->serial());
    rc = MPI_Iallgather(o.inputs[0], n, MPI_BYTE, o.outputs[0], n, MPI_BYTE, call.comm(), &req);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Iallgather failed: ",
                   mpi::MpiTransport::error_string(rc));
  call.wait(req, "MPI_Iallgather");
}

void native_broadcast(MeshComm& c, const Group& g, const BroadcastOptions& o) {
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  if (o.count == 0) return;
  int n = mpi_count(o.count * t.size, "broadcast");
  NativeCall call(c, g, "broadcast", c.timeout_or_default(o.timeout));
  MPI_Comm comm = call.comm();
  const Placement& p = c.placement();
  for (const auto& locals : local_groups(c, g)) {
    int any = c.local_nodes()[locals[0]];
    int root_node = g.node_of(any, o.root);
    int root_rank = p.rank_of(root_node);
    // Rank of root_rank inside the group communicator (see NativeCall::create(): split keys).
    int root_in_comm = g.scope() == Scope::world ? root_rank
                       : g.scope() == Scope::rows ? root_rank % p.grid_cols
                                                  : root_rank / p.grid_cols;
    void* buf = c.hosts(root_node) ? o.buffers[c.local_index(root_node)] : o.buffers[locals[0]];
    int comm_size = 1;
    MPI_Comm_size(comm, &comm_size);
    if (comm_size > 1) {
      MPI_Request req;
      int rc;
      {
        Lock lock(call.state().t->serial());
        rc = MPI_Ibcast(buf, n, MPI_BYTE, root_in_comm, comm, &req);
      }
      TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Ibcast failed: ",
                       mpi::MpiTransport::error_string(rc));
      call.wait(req, "MPI_Ibcast");
    }
    for (int l : locals) {
      if (o.buffers[l] != buf) std::memcpy(o.buffers[l], buf, o.count * t.size);
    }
  }
}

void native_barrier(MeshComm& c, std::chrono::milliseconds timeout) {
  Group world(c, Scope::world);
  NativeCall call(c, world, "barrier", timeout);
  MPI_Request req;
  int rc;
  {
    Lock lock(call.state().t->serial());
    rc = MPI_Ibarrier(call.state().t->comm(), &req);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Ibarrier failed: ", mpi::MpiTransport::error_string(rc));
  call.wait(req, "MPI_Ibarrier");
}

#endif

}  // namespace tessera::comms::detail
