// The mesh communicator: this rank's view of an emulated mesh carried by a transport.
//
//   auto t = std::make_shared<mpi::MpiTransport>();            // or loopback / grpc
//   MeshComm comm(Mesh::parse("2x2"), t);                      // 4 ranks: one node each
//   comm.local_nodes();                                         // the nodes this rank hosts
//   allreduce(comm.world(), opts);                              // comms/collectives.h
//   allreduce(comm.rows(), opts);                               // each mesh row on its own
//
// A rank hosts a rectangular block of nodes (placement.h). A collective call on a rank passes
// one buffer per hosted node, in local_nodes() order; each hosted node runs the algorithm on a
// thread of its own (the calling thread when there is one node), and nodes of one rank
// exchange through memory. Every node-to-node message is charged to its route's links
// (link_stats.h).
//
// Deadlines and failure: every call has a deadline (options timeout, else CommOptions::timeout,
// else env TESSERA_COMM_TIMEOUT_MS, else 60 s). A peer that dies or stops answering makes the
// call throw TimeoutError / NetworkError / RemoteError (all CommError) naming the operation,
// this rank and node, and the peer rank and node. The communicator then aborts its transport
// (telling peers that can be told) and refuses further calls: build a new transport and
// communicator. Bad options throw ValueError / TypeError before anything is sent.
//
// Threading: collective calls on one communicator may come from several threads only if they
// use distinct tags; calls with one tag must be made in the same order on every rank.
#pragma once

#include <tessera/comms/cost_model.h>
#include <tessera/comms/fabric.h>
#include <tessera/comms/link_stats.h>
#include <tessera/comms/mesh.h>
#include <tessera/comms/placement.h>
#include <tessera/comms/transport.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tessera::comms {

struct CommOptions {
  // Default deadline of a call; 0: env TESSERA_COMM_TIMEOUT_MS, else 60 s.
  std::chrono::milliseconds timeout{0};
  // Explicit grid of ranks (rows x cols of blocks); 0: Placement::make's choice.
  int rank_grid_rows = 0, rank_grid_cols = 0;
  // Pipelining segment of collectives; 0: env TESSERA_CHUNK_BYTES, else the transport's
  // segment_bytes() (1 MiB; 4 MiB over grpc when every pair of ranks reads each other's memory).
  size_t chunk_bytes = 0;
  // Cost of an exchange between nodes of one rank (thread hand-off, memcpy).
  AlphaBeta memory{5e-6, 8e9};
};

enum class Scope : uint8_t { world = 0, rows = 1, cols = 2 };
const char* scope_name(Scope s);

class MeshComm;

// A set of groups that run one collective each, side by side: the whole mesh (one group),
// every mesh row, or every mesh column. Members of a group are numbered row-major over the
// group's grid: a row group is 1 x cols, a column group rows x 1.
class Group {
 public:
  Group(MeshComm& comm, Scope scope) : comm_(&comm), scope_(scope) {}
  MeshComm& comm() const { return *comm_; }
  Scope scope() const { return scope_; }
  int rows() const;    // the group grid
  int cols() const;
  int size() const { return rows() * cols(); }
  int member_of(int node) const;                // index of a node within its group
  int node_of(int any_node_of_group, int member) const;
  Coord member_coord(int member) const { return {member / cols(), member % cols()}; }

 private:
  MeshComm* comm_;
  Scope scope_;
};

struct OpContext;

// One hosted node's part of a call: posts messages (charging their routes) and waits on them
// with the call's deadline, turning failures into errors that name everything involved.
class NodeCtx {
 public:
  struct Pending {
    RequestPtr req;
    int peer = -1;  // node
    bool is_send = false;
    size_t bytes = 0;
  };
  NodeCtx(OpContext& op, int node, int local) : op_(op), node_(node), local_(local) {}
  int node() const { return node_; }
  int local() const { return local_; }
  OpContext& op() { return op_; }

  Pending send(int dst, int subtag, const void* data, size_t bytes);
  // With `consume`: the bytes are handed to it on completion (Transport::irecv_consume).
  Pending recv(int src, int subtag, void* data, size_t bytes, Transport::Consume consume = nullptr);
  void wait(Pending& p);
  void wait_all(std::vector<Pending>& ps);

 private:
  [[noreturn]] void fail(const Pending& p, const std::exception* cause, bool timed_out);
  OpContext& op_;
  int node_, local_;
};

// Shared by the nodes of one call on this rank.
struct OpContext {
  MeshComm& comm;
  std::string name;  // "allreduce(mesh2d, world)"
  uint64_t tag = 0;  // the user tag
  Deadline deadline;
  std::chrono::milliseconds timeout{0};
  Charges charges;
  std::atomic<bool> cancelled{false};
  OpContext(MeshComm& c, std::string n, uint64_t t, std::chrono::milliseconds to)
      : comm(c), name(std::move(n)), tag(t), deadline(Clock::now() + to), timeout(to) {}
};

class MeshComm {
 public:
  MeshComm(Mesh mesh, std::shared_ptr<Transport> transport, CommOptions options = {});
  ~MeshComm();
  MeshComm(const MeshComm&) = delete;
  MeshComm& operator=(const MeshComm&) = delete;

  const Mesh& mesh() const { return mesh_; }
  const Placement& placement() const { return placement_; }
  Transport& transport() { return *transport_; }
  const Transport& transport() const { return *transport_; }
  int rank() const { return transport_->rank(); }
  int ranks() const { return transport_->size(); }
  const std::vector<int>& local_nodes() const { return local_nodes_; }
  bool hosts(int node) const { return fabric_.is_local(node); }
  int local_index(int node) const;  // position in local_nodes(); IndexError if not hosted
  const CommOptions& options() const { return options_; }
  LinkStats& link_stats() { return stats_; }
  Fabric& fabric() { return fabric_; }
  // Largest user tag (the top one is reserved for internal use).
  uint64_t max_user_tag() const;

  Group world() { return Group(*this, Scope::world); }
  Group rows() { return Group(*this, Scope::rows); }
  Group cols() { return Group(*this, Scope::cols); }

  bool broken() const { return broken_.load(); }

  // ---- used by the collectives (collectives*.cc) ----
  std::chrono::milliseconds timeout_or_default(std::chrono::milliseconds t) const;
  size_t chunk_bytes_or_default(size_t b) const;
  // Runs fn for every hosted node (one thread each) under one OpContext and records the call.
  // On a CommError: aborts the transport, marks the communicator broken, rethrows.
  CollectiveRecord run(CollectiveRecord rec, OpContext& op, double latency_s,
                       const std::function<void(NodeCtx&)>& per_node);
  // As run(), but fn runs once for the rank (native collectives).
  CollectiveRecord run_rank(CollectiveRecord rec, OpContext& op, double latency_s,
                            const std::function<void()>& fn);
  void check_usable() const;  // CommError if broken
  // Opaque per-communicator state of the native (MPI) collectives.
  std::shared_ptr<void>& native_state() { return native_state_; }
  // Keeps a detached send (and the copy it reads) alive until it completes.
  void keep_until_done(std::shared_ptr<void> data, RequestPtr req);

 private:
  CollectiveRecord finish(CollectiveRecord rec, OpContext& op, double latency_s,
                          Clock::time_point t0);
  void on_comm_error(const std::string& what);

  Mesh mesh_;
  std::shared_ptr<Transport> transport_;
  CommOptions options_;
  Placement placement_;
  Fabric fabric_;
  std::vector<int> local_nodes_;
  LinkStats stats_;
  std::atomic<bool> broken_{false};
  mutable std::mutex mu_;
  std::string broken_reason_;
  std::shared_ptr<void> native_state_;
  std::vector<std::pair<std::shared_ptr<void>, RequestPtr>> detached_;  // guarded by mu_
};

// Sums every rank's link stats on rank 0 (other ranks get their own back). Collective over
// all ranks; uses the reserved tag.
LinkStats gather_link_stats(MeshComm& comm, std::chrono::milliseconds timeout = std::chrono::milliseconds{0});

}  // namespace tessera::comms
