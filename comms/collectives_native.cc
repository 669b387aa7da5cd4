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

NativeState& state(MeshComm& c) {
  auto& slot = c.native_state();
  if (!slot) {
    auto* t = dynamic_cast<mpi::MpiTransport*>(&c.transport());
    TESSERA_INTERNAL_ASSERT(t != nullptr, "native collectives without the mpi transport");
    auto s = std::make_shared<NativeState>();
    s->t = t;
    const Placement& p = c.placement();
    int r = c.rank();
    Lock lock(t->serial());
    MPI_Comm_split(t->comm(), r / p.grid_cols, r % p.grid_cols, &s->rows);
    MPI_Comm_split(t->comm(), r % p.grid_cols, r / p.grid_cols, &s->cols);
    for (int i = 0; i < 4; ++i) {
      MPI_Op_create(user_reduce, 1, &s->bf16_ops[i]);
      MPI_Op_create(user_reduce, 1, &s->cfp8_ops[i]);
    }
    slot = s;
  }
  return *static_cast<NativeState*>(slot.get());
}

MPI_Comm group_comm(MeshComm& c, const Group& g) {
  NativeState& s = state(c);
  switch (g.scope()) {
    case Scope::world: return s.t->comm();
    case Scope::rows: return s.rows;
    case Scope::cols: return s.cols;
  }
  return s.t->comm();
}

void wait_native(MeshComm& c, MPI_Request& req, Deadline deadline, const char* call,
                 std::chrono::milliseconds timeout) {
  auto* t = state(c).t;
  for (int i = 0;; ++i) {
    int flag = 0, rc;
    {
      Lock lock(t->serial());
      rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      throw NetworkError(std::string(call) + " on rank " + std::to_string(c.rank()) +
                         " failed: " + mpi::MpiTransport::error_string(rc));
    }
    if (flag) return;
    if (Clock::now() >= deadline) {
      throw TimeoutError(std::string(call) + " on rank " + std::to_string(c.rank()) +
                         ": timed out after " + std::to_string(timeout.count()) +
                         " ms: not every rank of the group took part in time");
    }
    if (i > 64) std::this_thread::yield();
  }
}

MPI_Datatype mpi_type(const ElemType& t) {
  switch (t.dtype) {
    case DType::f32: return MPI_FLOAT;
    case DType::bf16: return MPI_UINT16_T;
    default: return MPI_UINT8_T;
  }
}

MPI_Op mpi_op(MeshComm& c, const ElemType& t, ReduceOp op) {
  if (t.dtype == DType::f32) {
    switch (op) {
      case ReduceOp::sum: return MPI_SUM;
      case ReduceOp::prod: return MPI_PROD;
      case ReduceOp::min: return MPI_MIN;
      case ReduceOp::max: return MPI_MAX;
    }
  }
  NativeState& s = state(c);
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
  auto timeout = c.timeout_or_default(o.timeout);
  Deadline deadline = Clock::now() + timeout;
  if (o.count == 0) return;
  int n = mpi_count(o.count, "allreduce");
  MPI_Comm comm = group_comm(c, g);
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
        Lock lock(state(c).t->serial());
        rc = MPI_Iallreduce(MPI_IN_PLACE, acc, n, mpi_type(t), mpi_op(c, t, o.op), comm, &req);
      }
      TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Iallreduce failed: ",
                       mpi::MpiTransport::error_string(rc));
      wait_native(c, req, deadline, "allreduce(native): MPI_Iallreduce", timeout);
    }
    for (size_t k = 1; k < locals.size(); ++k) std::memcpy(o.outputs[locals[k]], acc, o.count * t.size);
  }
}

void native_reduce_scatter(MeshComm& c, const Group& g, const ReduceScatterOptions& o) {
  require_one_node_per_rank(c, "reduce_scatter");
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  auto timeout = c.timeout_or_default(o.timeout);
  Deadline deadline = Clock::now() + timeout;
  if (o.count == 0) return;
  int n = mpi_count(o.count, "reduce_scatter");
  mpi_count(o.count * static_cast<size_t>(g.size()), "reduce_scatter");
  std::unique_lock<std::mutex> user_lock(g_user_op_mu, std::defer_lock);
  if (t.dtype != DType::f32) {
    user_lock.lock();
    g_elem = t;
    g_op = o.op;
  }
  MPI_Request req;
  int rc;
  {
    Lock lock(state(c).t->serial());
    rc = MPI_Ireduce_scatter_block(o.inputs[0], o.outputs[0], n, mpi_type(t), mpi_op(c, t, o.op),
                                   group_comm(c, g), &req);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Ireduce_scatter_block failed: ",
                   mpi::MpiTransport::error_string(rc));
  wait_native(c, req, deadline, "reduce_scatter(native): MPI_Ireduce_scatter_block", timeout);
}

void native_allgather(MeshComm& c, const Group& g, const AllgatherOptions& o) {
  require_one_node_per_rank(c, "allgather");
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  auto timeout = c.timeout_or_default(o.timeout);
  Deadline deadline = Clock::now() + timeout;
  if (o.count == 0) return;
  int n = mpi_count(o.count * t.size, "allgather");
  mpi_count(o.count * t.size * static_cast<size_t>(g.size()), "allgather");
  MPI_Request req;
  int rc;
  {
    Lock lock(state(c).t->serial());
    rc = MPI_Iallgather(o.inputs[0], n, MPI_BYTE, o.outputs[0], n, MPI_BYTE, group_comm(c, g), &req);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Iallgather failed: ",
                   mpi::MpiTransport::error_string(rc));
  wait_native(c, req, deadline, "allgather(native): MPI_Iallgather", timeout);
}

void native_broadcast(MeshComm& c, const Group& g, const BroadcastOptions& o) {
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  auto timeout = c.timeout_or_default(o.timeout);
  Deadline deadline = Clock::now() + timeout;
  if (o.count == 0) return;
  int n = mpi_count(o.count * t.size, "broadcast");
  MPI_Comm comm = group_comm(c, g);
  const Placement& p = c.placement();
  for (const auto& locals : local_groups(c, g)) {
    int any = c.local_nodes()[locals[0]];
    int root_node = g.node_of(any, o.root);
    int root_rank = p.rank_of(root_node);
    // Rank of root_rank inside the group communicator (see state(): split keys).
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
        Lock lock(state(c).t->serial());
        rc = MPI_Ibcast(buf, n, MPI_BYTE, root_in_comm, comm, &req);
      }
      TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Ibcast failed: ",
                       mpi::MpiTransport::error_string(rc));
      wait_native(c, req, deadline, "broadcast(native): MPI_Ibcast", timeout);
    }
    for (int l : locals) {
      if (o.buffers[l] != buf) std::memcpy(o.buffers[l], buf, o.count * t.size);
    }
  }
}

void native_barrier(MeshComm& c, std::chrono::milliseconds timeout) {
  Deadline deadline = Clock::now() + timeout;
  MPI_Request req;
  {
    Lock lock(state(c).t->serial());
    MPI_Ibarrier(state(c).t->comm(), &req);
  }
  wait_native(c, req, deadline, "barrier(native): MPI_Ibarrier", timeout);
}

#endif

}  // namespace tessera::comms::detail
