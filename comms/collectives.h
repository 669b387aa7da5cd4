// Collectives over the emulated mesh (Gloo-style: one options struct per call).
//
//   AllreduceOptions o;
//   o.inputs = {x.data()};  o.outputs = {x.data()};       // one buffer per hosted node; in place
//   o.count = x.size();  o.dtype = DType::f32;  o.timeout = std::chrono::seconds(10);
//   CollectiveRecord r = allreduce(comm.world(), o);     // or comm.rows() / comm.cols()
//   r.algorithm, r.emulated_s, r.payload_bytes ...
//
// Buffers: one per node this rank hosts, in comm.local_nodes() order, each `count` elements
// (reduce-scatter inputs and all-gather outputs: count x group size, laid out by member index;
// comms/communicator.h numbers members). Element types: f32, bf16 and cfp8 (e4m3/e5m2 with
// cfp8_bias, default per layout); reductions decode to f32, combine, and round once per step
// to the buffer type, so bf16/cfp8 partial sums are rounded at every hop of the algorithm.
// Buffers must not overlap, except inputs[i] == outputs[i] (in place).
//
// Algorithms (option `algorithm`, else env TESSERA_ALLREDUCE_ALGO, else the cost model in
// cost_model.h, which applies to every collective with an algorithm choice):
//   ring    a ring through the group (a Hamiltonian cycle of neighbours where the grid has
//           one, else a snake), pipelined in chunk_bytes segments;
//   mesh2d  reduce-scatter along the rows, then along the columns, all-gather back (broadcast:
//           along the root's row, then down every column);
//   native  the transport's own collective (MPI_Allreduce etc.; mpi transport only).
// All ranks must call the same collectives in the same order with the same count, dtype,
// algorithm and tag. Errors: see communicator.h.
#pragma once

#include <tessera/comms/communicator.h>
#include <tessera/comms/reduce.h>

#include <array>
#include <chrono>
#include <vector>

namespace tessera::comms {

struct CollectiveOptions {
  DType dtype = DType::f32;
  int cfp8_bias = -1;                      // cfp8 exponent bias; -1: the layout's default
  uint64_t tag = 0;                        // up to comm.max_user_tag()
  std::chrono::milliseconds timeout{0};    // 0: the communicator's default
  Algorithm algorithm = Algorithm::auto_;
  size_t chunk_bytes = 0;                  // pipelining segment; 0: the communicator's default
};

struct AllreduceOptions : CollectiveOptions {
  std::vector<const void*> inputs;
  std::vector<void*> outputs;
  size_t count = 0;
  ReduceOp op = ReduceOp::sum;
};

struct ReduceScatterOptions : CollectiveOptions {
  std::vector<const void*> inputs;  // count x group size elements each
  std::vector<void*> outputs;       // count elements: the member's block of the reduction
  size_t count = 0;
  ReduceOp op = ReduceOp::sum;
};

struct AllgatherOptions : CollectiveOptions {
  std::vector<const void*> inputs;  // count elements each
  std::vector<void*> outputs;       // count x group size: member m's input at m * count
  size_t count = 0;
};

struct BroadcastOptions : CollectiveOptions {
  std::vector<void*> buffers;  // the root's is read, every other node's written
  size_t count = 0;
  int root = 0;                // member index within each group
};

struct BarrierOptions : CollectiveOptions {};

// Neighbour (halo) exchange: each node sends send[d] to its neighbour in direction d and
// receives into recv[d] what that neighbour sent towards it. Directions index by Direction
// (east, west, south, north); a world group exchanges in all four, a row group east/west, a
// column group south/north. Without `periodic`, nodes on the mesh edge skip missing
// neighbours (their recv buffers are left alone); with it the group wraps around.
struct HaloOptions : CollectiveOptions {
  struct Buffers {
    std::array<const void*, 4> send{};
    std::array<void*, 4> recv{};
  };
  std::vector<Buffers> nodes;           // one per hosted node
  std::array<size_t, 4> count{};        // elements per direction (east, west, south, north)
  bool periodic = false;
};

// Point to point between two nodes (mesh linear indices). send() runs on the rank hosting
// `from`, recv() on the rank hosting `to`; when both are hosted by one rank, send() copies the
// data and returns at once, so one thread calls send() and then recv() (a recv() first waits
// for a send that cannot come until its deadline, then throws TimeoutError).
struct SendRecvOptions : CollectiveOptions {
  int from = 0, to = 0;
  void* buffer = nullptr;  // send: read; recv: written
  size_t count = 0;
};

CollectiveRecord allreduce(const Group& g, const AllreduceOptions& o);
CollectiveRecord reduce_scatter(const Group& g, const ReduceScatterOptions& o);
CollectiveRecord allgather(const Group& g, const AllgatherOptions& o);
CollectiveRecord broadcast(const Group& g, const BroadcastOptions& o);
CollectiveRecord barrier(const Group& g, const BarrierOptions& o = {});
CollectiveRecord halo_exchange(const Group& g, const HaloOptions& o);
CollectiveRecord send(MeshComm& comm, const SendRecvOptions& o);
CollectiveRecord recv(MeshComm& comm, const SendRecvOptions& o);

// The algorithm a call would use, and why (the cost model's predictions).
AlgorithmChoice choose_algorithm(const Group& g, OpKind kind, size_t bytes_per_node,
                                 Algorithm requested = Algorithm::auto_);

// The ring order of a group grid: member indices, consecutive members neighbours where the
// grid allows (a Hamiltonian cycle when rows or cols is even and both exceed 1).
std::vector<int> ring_order(int rows, int cols);

}  // namespace tessera::comms
