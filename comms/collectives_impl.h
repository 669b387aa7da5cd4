// Internal building blocks of the collectives (not installed API): ring reduce-scatter and
// all-gather over arbitrary chunk layouts, chain broadcast, and the native (MPI) entry points.
#pragma once

#include <tessera/comms/collectives.h>

#include <vector>

namespace tessera::comms::detail {

struct Range {
  size_t off = 0;  // elements
  size_t len = 0;
};
using Chunk = std::vector<Range>;

// `count` elements from `off` in `parts` contiguous chunks, the first count % parts one longer.
std::vector<Chunk> split_even(size_t off, size_t count, int parts);

struct Ring {
  std::vector<int> nodes;  // mesh nodes in ring order
  int pos = 0;             // this node's position
  int size() const { return static_cast<int>(nodes.size()); }
  int next() const { return nodes[(pos + 1) % size()]; }
  int prev() const { return nodes[(pos + size() - 1) % size()]; }
};

// After: acc[chunks[pos]] holds the reduction over the ring of in[chunks[pos]]; other chunks of
// acc hold partial results. in may equal acc. chunks.size() == ring size.
void ring_reduce_scatter(NodeCtx& n, const Ring& ring, const std::vector<Chunk>& chunks,
                         const ElemType& t, ReduceOp op, const void* in, void* acc,
                         size_t seg_elems);
// Before: buf[chunks[pos]] valid on every node. After: every chunk valid everywhere.
void ring_allgather(NodeCtx& n, const Ring& ring, const std::vector<Chunk>& chunks,
                    const ElemType& t, void* buf, size_t seg_elems);
// Receives `bytes` from pred (unless pred < 0: this node is a source) segment by segment, and
// forwards each segment to every successor as it arrives.
void chain_broadcast(NodeCtx& n, int pred, const std::vector<int>& succs, void* buf, size_t bytes,
                     size_t seg_bytes, int subtag);

// Native (MPI) collectives: available() is false without the mpi transport.
bool native_available(MeshComm& comm);
void native_allreduce(MeshComm& comm, const Group& g, const AllreduceOptions& o);
void native_reduce_scatter(MeshComm& comm, const Group& g, const ReduceScatterOptions& o);
void native_allgather(MeshComm& comm, const Group& g, const AllgatherOptions& o);
void native_broadcast(MeshComm& comm, const Group& g, const BroadcastOptions& o);
void native_barrier(MeshComm& comm, std::chrono::milliseconds timeout);

}  // namespace tessera::comms::detail
