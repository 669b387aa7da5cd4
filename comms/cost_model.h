// α-β cost model for collective algorithms; chooses the all-reduce algorithm (NCCL-style: a
// latency + bandwidth model per message size, overridable).
//
//   Algorithm a = resolve_algorithm(opts.algorithm);   // option, else TESSERA_ALLREDUCE_ALGO,
//                                                       // else TESSERA_COLLECTIVE_ALGO
//   if (a == Algorithm::auto_) a = choose_allreduce(bytes, geometry, params).algorithm;
//
// A message of n bytes over an edge costs α + n/β. A ring step is paced by its slowest edge,
// so a ring uses α = max α and β = min β over its edges. Edges between nodes of one rank cost
// the memory α-β (a thread hand-off and a memcpy); edges between ranks the transport's.
// n = bytes per node buffer, p = r·c nodes in the group, a group grid of r rows x c cols.
//
//   ring    all-reduce : T = 2(p-1)·α_ring + 2·(p-1)/p · n/β_ring
//   mesh2d  all-reduce : T = 2(c-1)·α_x + 2·(c-1)/c · n/β_x            (reduce-scatter and
//                          + 2(r-1)·α_y + 2·(r-1)/(r·c) · n/β_y          all-gather along rows
//                                                                      of c, then columns of r)
//   native  all-reduce : T = 2(k-1)·(α_m + n/β_m)                      (reduce the k nodes of a
//                          + 2·⌈log2 P⌉·α_t + 2·(P-1)/P · n/β_t         rank in memory, MPI over
//                                                                      the P ranks, copy back)
// α_x/β_x: slowest edge of the row rings, α_y/β_y: of the column rings, α_t/β_t the
// transport, α_m/β_m memory. With r,c > 1 the bandwidth terms of ring and mesh2d are equal
// (their sum is 2(p-1)/p·n/β when β_x = β_y) and mesh2d needs 2(r+c-2) steps instead of
// 2(p-1): it wins on latency. Ties go to the earlier of ring, mesh2d, native.
//
// The same formulas with the mesh's link latency and bandwidth along the real routes give the
// latency term of a collective's emulated time (link_stats.h).
#pragma once

#include <string>
#include <string_view>

namespace tessera::comms {

enum class Algorithm : uint8_t { auto_ = 0, ring = 1, mesh2d = 2, native = 3 };
const char* algorithm_name(Algorithm a);  // "auto", "ring", "mesh2d", "native"
// ValueError naming the string and the choices.
Algorithm algorithm_from_name(std::string_view s);
// The option unless it is auto, else the environment: TESSERA_ALLREDUCE_ALGO (all-reduce only),
// then TESSERA_COLLECTIVE_ALGO (every collective with a choice of algorithm: all-reduce,
// reduce-scatter, all-gather, broadcast). ValueError names the variable if its value is bad.
Algorithm resolve_algorithm(Algorithm option, bool allreduce = true);

struct AlphaBeta {
  double alpha = 0;  // s per message
  double beta = 1;   // bytes/s
};

// Slowest-edge parameters of the rings an algorithm uses.
struct RingEdges {
  AlphaBeta ring;    // the single ring (ring algorithm)
  AlphaBeta x, y;    // row rings and column rings (mesh2d)
};

struct AllreduceGeometry {
  int rows = 1, cols = 1;   // group grid
  int ranks = 1;            // ranks hosting the group
  int nodes_per_rank = 1;   // k: nodes of the group on one rank
  RingEdges edges;
  bool native_available = false;
  AlphaBeta transport, memory;
};

double ring_allreduce_time(double n, int p, AlphaBeta ring);
double mesh2d_allreduce_time(double n, int r, int c, AlphaBeta x, AlphaBeta y);
double native_allreduce_time(double n, int ranks, int nodes_per_rank, AlphaBeta transport,
                             AlphaBeta memory);

struct AlgorithmChoice {
  Algorithm algorithm = Algorithm::ring;
  double ring_s = 0, mesh2d_s = 0, native_s = -1;  // predictions; native -1 when unavailable
  std::string explain() const;  // "mesh2d: 1.2 ms (ring 3.4 ms, native n/a)"
};
AlgorithmChoice choose_allreduce(double n_bytes, const AllreduceGeometry& g);

}  // namespace tessera::comms
