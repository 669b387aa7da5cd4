// Collective entry points: validation, algorithm choice, and each algorithm assembled from the
// ring engines of collectives_ring.cc.
#include <tessera/comms/collectives_impl.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

namespace tessera::comms {

using detail::Chunk;
using detail::Range;
using detail::Ring;

std::vector<int> ring_order(int rows, int cols) {
  std::vector<int> out;
  out.reserve(static_cast<size_t>(rows) * cols);
  auto id = [&](int r, int c) { return r * cols + c; };
  if (rows == 1 || cols == 1) {
    for (int i = 0; i < rows * cols; ++i) out.push_back(i);
  } else if (rows % 2 == 0) {
    // Along row 0, snake back through columns 1.. of the other rows, up column 0.
    for (int c = 0; c < cols; ++c) out.push_back(id(0, c));
    for (int r = 1; r < rows; ++r) {
      if (r % 2 == 1) {
        for (int c = cols - 1; c >= 1; --c) out.push_back(id(r, c));
      } else {
        for (int c = 1; c < cols; ++c) out.push_back(id(r, c));
      }
    }
    for (int r = rows - 1; r >= 1; --r) out.push_back(id(r, 0));
  } else if (cols % 2 == 0) {
    // The transpose of the above.
    for (int r = 0; r < rows; ++r) out.push_back(id(r, 0));
    for (int c = 1; c < cols; ++c) {
      if (c % 2 == 1) {
        for (int r = rows - 1; r >= 1; --r) out.push_back(id(r, c));
      } else {
        for (int r = 1; r < rows; ++r) out.push_back(id(r, c));
      }
    }
    for (int c = cols - 1; c >= 1; --c) out.push_back(id(0, c));
  } else {
    // Odd x odd has no Hamiltonian cycle: a snake, closed by a longer route.
    for (int r = 0; r < rows; ++r) {
      for (int k = 0; k < cols; ++k) out.push_back(id(r, r % 2 ? cols - 1 - k : k));
    }
  }
  return out;
}

namespace {

// ---- geometry of a node's groups -----------------------------------------------------------

std::vector<int> to_nodes(const Group& g, int anchor, const std::vector<int>& members) {
  std::vector<int> nodes;
  nodes.reserve(members.size());
  for (int m : members) nodes.push_back(g.node_of(anchor, m));
  return nodes;
}

Ring make_ring(const Group& g, int node) {
  std::vector<int> order = ring_order(g.rows(), g.cols());
  Ring r;
  r.nodes = to_nodes(g, node, order);
  r.pos = static_cast<int>(std::find(r.nodes.begin(), r.nodes.end(), node) - r.nodes.begin());
  return r;
}

// The row ring (along group columns) and column ring (along group rows) through a node.
Ring row_ring(const Group& g, int node) {
  Coord me = g.member_coord(g.member_of(node));
  Ring r;
  for (int b = 0; b < g.cols(); ++b) r.nodes.push_back(g.node_of(node, me.row * g.cols() + b));
  r.pos = me.col;
  return r;
}
Ring col_ring(const Group& g, int node) {
  Coord me = g.member_coord(g.member_of(node));
  Ring r;
  for (int a = 0; a < g.rows(); ++a) r.nodes.push_back(g.node_of(node, a * g.cols() + me.col));
  r.pos = me.row;
  return r;
}

// Slowest edge of a ring: host costs (choice) or mesh route latency (emulated time).
AlphaBeta ring_cost(MeshComm& c, const std::vector<int>& nodes) {
  AlphaBeta e{0, std::numeric_limits<double>::infinity()};
  int m = static_cast<int>(nodes.size());
  if (m < 2) return {0, 1};
  for (int i = 0; i < m; ++i) {
    int a = nodes[i], b = nodes[(i + 1) % m];
    bool remote = c.placement().rank_of(a) != c.placement().rank_of(b);
    AlphaBeta ab = remote ? AlphaBeta{c.transport().alpha(), c.transport().beta()} : c.options().memory;
    e.alpha = std::max(e.alpha, ab.alpha);
    e.beta = std::min(e.beta, ab.beta);
  }
  return e;
}
double ring_latency(const Mesh& mesh, const std::vector<int>& nodes) {
  double t = 0;
  int m = static_cast<int>(nodes.size());
  if (m < 2) return 0;
  for (int i = 0; i < m; ++i) t = std::max(t, mesh.route_latency(nodes[i], nodes[(i + 1) % m]));
  return t;
}

// Emulated latency term (link_stats.h) of the reduce-scatter / all-gather halves.
double half_latency(MeshComm& c, const Group& g, Algorithm a) {
  int anchor = c.local_nodes().front();
  const Mesh& mesh = c.mesh();
  if (a == Algorithm::mesh2d) {
    return (g.cols() - 1) * ring_latency(mesh, row_ring(g, anchor).nodes) +
           (g.rows() - 1) * ring_latency(mesh, col_ring(g, anchor).nodes);
  }
  return (g.size() - 1) * ring_latency(mesh, make_ring(g, anchor).nodes);
}

// Emulated latency term of a broadcast from member `root`: the longest path from the root
// through the chain (ring: in ring order; mesh2d: along the root's row, then every column).
double broadcast_latency(MeshComm& c, const Group& g, Algorithm a, int root) {
  int anchor = c.local_nodes().front();
  const Mesh& mesh = c.mesh();
  if (a != Algorithm::mesh2d) {
    Ring r = make_ring(g, anchor);
    const int m = r.size();
    const int at = static_cast<int>(std::find(r.nodes.begin(), r.nodes.end(), g.node_of(anchor, root)) - r.nodes.begin());
    double t = 0;
    for (int k = 0; k + 1 < m; ++k) t += mesh.route_latency(r.nodes[(at + k) % m], r.nodes[(at + k + 1) % m]);
    return t;
  }
  auto node = [&](int row, int col) { return g.node_of(anchor, row * g.cols() + col); };
  const Coord rc = g.member_coord(root);
  // Along the root's row to column `col`, then the farther end of that column.
  std::vector<double> along_row(static_cast<size_t>(g.cols()), 0.0);
  for (int col = rc.col + 1; col < g.cols(); ++col)
    along_row[col] = along_row[col - 1] + mesh.route_latency(node(rc.row, col - 1), node(rc.row, col));
  for (int col = rc.col - 1; col >= 0; --col)
    along_row[col] = along_row[col + 1] + mesh.route_latency(node(rc.row, col + 1), node(rc.row, col));
  double worst = 0;
  for (int col = 0; col < g.cols(); ++col) {
    double down = 0, up = 0;
    for (int row = rc.row + 1; row < g.rows(); ++row) down += mesh.route_latency(node(row - 1, col), node(row, col));
    for (int row = rc.row - 1; row >= 0; --row) up += mesh.route_latency(node(row + 1, col), node(row, col));
    worst = std::max(worst, along_row[col] + std::max(down, up));
  }
  return worst;
}

// ---- validation ------------------------------------------------------------------------------

template <typename In, typename Out>
void check_buffers(MeshComm& c, const char* what, const std::vector<In>& in, const std::vector<Out>& out,
                   size_t count) {
  size_t n = c.local_nodes().size();
  TESSERA_CHECK(in.size() == n && out.size() == n, what, ": rank ", c.rank(), " hosts ", n,
                " node(s), so it must pass ", n, " input and ", n, " output buffer(s), got ",
                in.size(), " and ", out.size());
  if (count == 0) return;
  for (size_t i = 0; i < n; ++i) {
    TESSERA_CHECK(in[i] != nullptr && out[i] != nullptr, what, ": buffer ", i, " (node ",
                  to_string(c.mesh().coord(c.local_nodes()[i])), ") is null");
  }
}

void check_common(MeshComm& c, const char* what, const CollectiveOptions& o) {
  c.check_usable();
  TESSERA_CHECK(o.tag <= c.max_user_tag(), what, ": tag ", o.tag, " is larger than ",
                c.max_user_tag(), ", the largest this communicator's transport (", c.transport().name(),
                ") carries with ", c.placement().nodes_per_rank(), " nodes per rank");
}

void check_size(const char* what, size_t count, size_t factor, size_t esize) {
  TESSERA_CHECK(count <= std::numeric_limits<size_t>::max() / std::max<size_t>(1, factor * esize),
                what, ": ", count, " elements x ", factor, " overflow");
}

size_t seg_elems(MeshComm& c, const CollectiveOptions& o, const ElemType& t) {
  return std::max<size_t>(1, c.chunk_bytes_or_default(o.chunk_bytes) / t.size);
}

Algorithm pick(const Group& g, OpKind kind, size_t bytes, Algorithm requested, const char* what) {
  AlgorithmChoice ch = choose_algorithm(g, kind, bytes, requested);
  if (ch.algorithm == Algorithm::native) {
    TESSERA_CHECK_AS(NotImplementedError, detail::native_available(g.comm()), what,
                     ": the native algorithm needs the mpi transport (this is ",
                     g.comm().transport().name(), ")");
  }
  log::get("comms")->debug("{}({}): {} bytes per node: {}", what, scope_name(g.scope()), bytes,
                           ch.explain());
  return ch.algorithm;
}

CollectiveRecord make_record(OpKind kind, Algorithm a, const Group& g, size_t count, DType dtype) {
  CollectiveRecord r;
  r.kind = kind;
  r.algorithm = algorithm_name(a);
  r.scope = scope_name(g.scope());
  r.count = count;
  r.dtype = dtype;
  return r;
}

std::string op_name(OpKind k, Algorithm a, const Group& g) {
  return std::string(op_kind_name(k)) + "(" + algorithm_name(a) + ", " + scope_name(g.scope()) + ")";
}

// Native collectives run inside MPI; charge the links as the ring would have.
void charge_nominal_ring(OpContext& op, const Group& g, double bytes_per_node_per_step, int steps) {
  MeshComm& c = op.comm;
  for (int node : c.local_nodes()) {
    Ring r = make_ring(g, node);
    if (r.size() < 2) continue;
    for (int s = 0; s < steps; ++s) {
      op.charges.add(c.mesh(), node, r.next(), static_cast<uint64_t>(bytes_per_node_per_step));
    }
  }
}

}  // namespace

AlgorithmChoice choose_algorithm(const Group& g, OpKind kind, size_t bytes, Algorithm requested) {
  MeshComm& c = g.comm();
  int anchor = c.local_nodes().front();
  AllreduceGeometry geo;
  geo.rows = g.rows();
  geo.cols = g.cols();
  std::set<int> ranks;
  for (int m = 0; m < g.size(); ++m) ranks.insert(c.placement().rank_of(g.node_of(anchor, m)));
  geo.ranks = static_cast<int>(ranks.size());
  geo.nodes_per_rank = g.size() / geo.ranks;
  geo.edges.ring = ring_cost(c, make_ring(g, anchor).nodes);
  geo.edges.x = ring_cost(c, row_ring(g, anchor).nodes);
  geo.edges.y = ring_cost(c, col_ring(g, anchor).nodes);
  geo.native_available = kind == OpKind::allreduce && detail::native_available(c);
  geo.transport = {c.transport().alpha(), c.transport().beta()};
  geo.memory = c.options().memory;
  AlgorithmChoice ch = choose_allreduce(static_cast<double>(bytes), geo);
  if (requested != Algorithm::auto_) ch.algorithm = requested;
  return ch;
}

// ---- all-reduce ------------------------------------------------------------------------------

CollectiveRecord allreduce(const Group& g, const AllreduceOptions& o) {
  MeshComm& c = g.comm();
  const char* what = "allreduce";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  check_buffers(c, what, o.inputs, o.outputs, o.count);
  check_size(what, o.count, 1, t.size);
  Algorithm a = pick(g, OpKind::allreduce, o.count * t.size, resolve_algorithm(o.algorithm), what);
  OpContext op(c, op_name(OpKind::allreduce, a, g), o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::allreduce, a, g, o.count, o.dtype);
  double latency = 2 * half_latency(c, g, a == Algorithm::native ? Algorithm::ring : a);
  size_t seg = seg_elems(c, o, t);

  if (a == Algorithm::native) {
    return c.run_rank(rec, op, latency, [&] {
      int m = g.size();
      charge_nominal_ring(op, g, static_cast<double>(o.count * t.size) / m, 2 * (m - 1));
      detail::native_allreduce(c, g, o);
    });
  }
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    const void* in = o.inputs[n.local()];
    void* out = o.outputs[n.local()];
    if (o.count == 0) return;
    if (a == Algorithm::ring) {
      Ring r = make_ring(g, n.node());
      auto chunks = detail::split_even(0, o.count, r.size());
      detail::ring_reduce_scatter(n, r, chunks, t, o.op, in, out, seg);
      detail::ring_allgather(n, r, chunks, t, out, seg);
      return;
    }
    // mesh2d: reduce-scatter along the row, then the column; all-gather back.
    Ring x = row_ring(g, n.node()), y = col_ring(g, n.node());
    auto xchunks = detail::split_even(0, o.count, x.size());
    const Chunk& mine = xchunks[x.pos];
    size_t off = mine.empty() ? 0 : mine[0].off, len = mine.empty() ? 0 : mine[0].len;
    auto ychunks = detail::split_even(off, len, y.size());
    detail::ring_reduce_scatter(n, x, xchunks, t, o.op, in, out, seg);
    detail::ring_reduce_scatter(n, y, ychunks, t, o.op, out, out, seg);
    detail::ring_allgather(n, y, ychunks, t, out, seg);
    detail::ring_allgather(n, x, xchunks, t, out, seg);
  });
}

// ---- reduce-scatter --------------------------------------------------------------------------

CollectiveRecord reduce_scatter(const Group& g, const ReduceScatterOptions& o) {
  MeshComm& c = g.comm();
  const char* what = "reduce_scatter";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  check_buffers(c, what, o.inputs, o.outputs, o.count);
  const size_t p = static_cast<size_t>(g.size());
  check_size(what, o.count, p, t.size);
  Algorithm a = pick(g, OpKind::reduce_scatter, o.count * p * t.size, resolve_algorithm(o.algorithm, false), what);
  OpContext op(c, op_name(OpKind::reduce_scatter, a, g), o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::reduce_scatter, a, g, o.count, o.dtype);
  double latency = half_latency(c, g, a == Algorithm::native ? Algorithm::ring : a);
  size_t seg = seg_elems(c, o, t);
  if (a == Algorithm::native) {
    return c.run_rank(rec, op, latency, [&] {
      charge_nominal_ring(op, g, static_cast<double>(o.count * t.size), g.size() - 1);
      detail::native_reduce_scatter(c, g, o);
    });
  }
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    if (o.count == 0) return;
    const int me = g.member_of(n.node());
    std::vector<char> work(o.count * p * t.size);
    auto block = [&](int member) { return Range{static_cast<size_t>(member) * o.count, o.count}; };
    if (a == Algorithm::ring) {
      Ring r = make_ring(g, n.node());
      std::vector<Chunk> chunks(p);
      for (int q = 0; q < r.size(); ++q) chunks[q] = {block(g.member_of(r.nodes[q]))};
      detail::ring_reduce_scatter(n, r, chunks, t, o.op, o.inputs[n.local()], work.data(), seg);
    } else {
      // Row phase: position b collects the blocks of group column b; column phase: its own block.
      Ring x = row_ring(g, n.node()), y = col_ring(g, n.node());
      std::vector<Chunk> xchunks(static_cast<size_t>(x.size())), ychunks(static_cast<size_t>(y.size()));
      for (int b = 0; b < x.size(); ++b)
        for (int a2 = 0; a2 < y.size(); ++a2) xchunks[b].push_back(block(a2 * g.cols() + b));
      Coord mc = g.member_coord(me);
      for (int a2 = 0; a2 < y.size(); ++a2) ychunks[a2] = {block(a2 * g.cols() + mc.col)};
      detail::ring_reduce_scatter(n, x, xchunks, t, o.op, o.inputs[n.local()], work.data(), seg);
      detail::ring_reduce_scatter(n, y, ychunks, t, o.op, work.data(), work.data(), seg);
    }
    std::memcpy(o.outputs[n.local()], work.data() + block(me).off * t.size, o.count * t.size);
  });
}

// ---- all-gather ------------------------------------------------------------------------------

CollectiveRecord allgather(const Group& g, const AllgatherOptions& o) {
  MeshComm& c = g.comm();
  const char* what = "allgather";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  check_buffers(c, what, o.inputs, o.outputs, o.count);
  const size_t p = static_cast<size_t>(g.size());
  check_size(what, o.count, p, t.size);
  Algorithm a = pick(g, OpKind::allgather, o.count * p * t.size, resolve_algorithm(o.algorithm, false), what);
  OpContext op(c, op_name(OpKind::allgather, a, g), o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::allgather, a, g, o.count, o.dtype);
  double latency = half_latency(c, g, a == Algorithm::native ? Algorithm::ring : a);
  size_t seg = seg_elems(c, o, t);
  if (a == Algorithm::native) {
    return c.run_rank(rec, op, latency, [&] {
      charge_nominal_ring(op, g, static_cast<double>(o.count * t.size), g.size() - 1);
      detail::native_allgather(c, g, o);
    });
  }
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    if (o.count == 0) return;
    const int me = g.member_of(n.node());
    void* out = o.outputs[n.local()];
    auto block = [&](int member) { return Range{static_cast<size_t>(member) * o.count, o.count}; };
    std::memmove(static_cast<char*>(out) + block(me).off * t.size, o.inputs[n.local()], o.count * t.size);
    if (a == Algorithm::ring) {
      Ring r = make_ring(g, n.node());
      std::vector<Chunk> chunks(p);
      for (int q = 0; q < r.size(); ++q) chunks[q] = {block(g.member_of(r.nodes[q]))};
      detail::ring_allgather(n, r, chunks, t, out, seg);
      return;
    }
    // Column phase: the blocks of this group column; row phase: whole group columns.
    Ring x = row_ring(g, n.node()), y = col_ring(g, n.node());
    Coord mc = g.member_coord(me);
    std::vector<Chunk> xchunks(static_cast<size_t>(x.size())), ychunks(static_cast<size_t>(y.size()));
    for (int a2 = 0; a2 < y.size(); ++a2) ychunks[a2] = {block(a2 * g.cols() + mc.col)};
    for (int b = 0; b < x.size(); ++b)
      for (int a2 = 0; a2 < y.size(); ++a2) xchunks[b].push_back(block(a2 * g.cols() + b));
    detail::ring_allgather(n, y, ychunks, t, out, seg);
    detail::ring_allgather(n, x, xchunks, t, out, seg);
  });
}

// ---- broadcast -------------------------------------------------------------------------------

CollectiveRecord broadcast(const Group& g, const BroadcastOptions& o) {
  MeshComm& c = g.comm();
  const char* what = "broadcast";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  check_buffers(c, what, o.buffers, o.buffers, o.count);
  check_size(what, o.count, 1, t.size);
  TESSERA_CHECK_INDEX(o.root >= 0 && o.root < g.size(), what, ": root member ", o.root,
                      " is outside the group of ", g.size(), " (scope ", scope_name(g.scope()), ")");
  Algorithm a = pick(g, OpKind::broadcast, o.count * t.size, resolve_algorithm(o.algorithm, false), what);
  OpContext op(c, op_name(OpKind::broadcast, a, g), o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::broadcast, a, g, o.count, o.dtype);
  double latency = broadcast_latency(c, g, a, o.root);
  size_t seg_bytes = seg_elems(c, o, t) * t.size;
  size_t bytes = o.count * t.size;
  if (a == Algorithm::native) {
    return c.run_rank(rec, op, latency, [&] {
      charge_nominal_ring(op, g, static_cast<double>(bytes), 1);
      detail::native_broadcast(c, g, o);
    });
  }
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    void* buf = o.buffers[n.local()];
    int me = g.member_of(n.node());
    if (a == Algorithm::ring) {
      // A chain in ring order starting at the root.
      Ring r = make_ring(g, n.node());
      int root_pos = static_cast<int>(std::find(r.nodes.begin(), r.nodes.end(), g.node_of(n.node(), o.root)) - r.nodes.begin());
      int dist = (r.pos - root_pos + r.size()) % r.size();
      int pred = dist == 0 ? -1 : r.prev();
      std::vector<int> succs;
      if (dist < r.size() - 1) succs.push_back(r.next());
      detail::chain_broadcast(n, pred, succs, buf, bytes, seg_bytes, 0);
      return;
    }
    // mesh2d: outwards along the root's row, then outwards along every column.
    Coord rc = g.member_coord(o.root), mc = g.member_coord(me);
    auto node_at = [&](int row, int col) { return g.node_of(n.node(), row * g.cols() + col); };
    int pred = -1;
    std::vector<int> succs;
    if (mc.row == rc.row) {
      if (mc.col != rc.col) pred = node_at(mc.row, mc.col + (mc.col < rc.col ? 1 : -1));
      if (mc.col <= rc.col && mc.col > 0) succs.push_back(node_at(mc.row, mc.col - 1));
      if (mc.col >= rc.col && mc.col + 1 < g.cols()) succs.push_back(node_at(mc.row, mc.col + 1));
      if (mc.row > 0) succs.push_back(node_at(mc.row - 1, mc.col));
      if (mc.row + 1 < g.rows()) succs.push_back(node_at(mc.row + 1, mc.col));
    } else {
      pred = node_at(mc.row + (mc.row < rc.row ? 1 : -1), mc.col);
      if (mc.row < rc.row && mc.row > 0) succs.push_back(node_at(mc.row - 1, mc.col));
      if (mc.row > rc.row && mc.row + 1 < g.rows()) succs.push_back(node_at(mc.row + 1, mc.col));
    }
    detail::chain_broadcast(n, pred, succs, buf, bytes, seg_bytes, 0);
  });
}

// ---- barrier ---------------------------------------------------------------------------------

CollectiveRecord barrier(const Group& g, const BarrierOptions& o) {
  MeshComm& c = g.comm();
  check_common(c, "barrier", o);
  Algorithm a = o.algorithm == Algorithm::native ? Algorithm::native : Algorithm::ring;
  if (a == Algorithm::native) {
    TESSERA_CHECK_AS(NotImplementedError, detail::native_available(c),
                     "barrier: the native algorithm needs the mpi transport (this is ",
                     c.transport().name(), ")");
  }
  OpContext op(c, op_name(OpKind::barrier, a, g), o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::barrier, a, g, 0, DType::f32);
  int rounds = 0;
  while ((1 << rounds) < g.size()) ++rounds;
  double latency = rounds * ring_latency(c.mesh(), make_ring(g, c.local_nodes().front()).nodes);
  if (a == Algorithm::native) {
    return c.run_rank(rec, op, latency, [&] { detail::native_barrier(c, op.timeout); });
  }
  // Dissemination: in round k member i signals i + 2^k and hears from i - 2^k.
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    int p = g.size(), me = g.member_of(n.node());
    for (int k = 0; (1 << k) < p; ++k) {
      int to = g.node_of(n.node(), (me + (1 << k)) % p);
      int from = g.node_of(n.node(), ((me - (1 << k)) % p + p) % p);
      auto r = n.recv(from, 0, nullptr, 0);
      auto s = n.send(to, 0, nullptr, 0);
      n.wait(r);
      n.wait(s);
    }
  });
}

// ---- halo exchange ---------------------------------------------------------------------------

CollectiveRecord halo_exchange(const Group& g, const HaloOptions& o) {
  MeshComm& c = g.comm();
  const char* what = "halo_exchange";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  size_t n_local = c.local_nodes().size();
  TESSERA_CHECK(o.nodes.size() == n_local, what, ": rank ", c.rank(), " hosts ", n_local,
                " node(s), so it must pass ", n_local, " buffer sets, got ", o.nodes.size());
  bool dirs[4] = {g.scope() != Scope::cols, g.scope() != Scope::cols, g.scope() != Scope::rows,
                  g.scope() != Scope::rows};
  for (size_t i = 0; i < n_local; ++i) {
    for (int d = 0; d < 4; ++d) {
      if (!dirs[d] || !o.count[d]) continue;
      TESSERA_CHECK(o.nodes[i].send[d] != nullptr, what, ": node ",
                    to_string(c.mesh().coord(c.local_nodes()[i])), " has no send buffer for direction ",
                    direction_name(static_cast<Direction>(d)));
    }
    for (int d = 0; d < 4; ++d) {
      int opp = d ^ 1;
      if (!dirs[d] || !o.count[opp]) continue;
      TESSERA_CHECK(o.nodes[i].recv[d] != nullptr, what, ": node ",
                    to_string(c.mesh().coord(c.local_nodes()[i])), " has no receive buffer for direction ",
                    direction_name(static_cast<Direction>(d)));
    }
  }
  OpContext op(c, std::string(what) + "(" + scope_name(g.scope()) + ")", o.tag,
               c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::halo, Algorithm::auto_, g, o.count[0], o.dtype);
  rec.algorithm = "direct";
  // The node of the group next to `node` towards d, or -1 at an open edge.
  auto neighbour = [&](int node, int d) -> int {
    if (!dirs[d]) return -1;
    Coord nb = g.member_coord(g.member_of(node));
    switch (static_cast<Direction>(d)) {
      case Direction::east: ++nb.col; break;
      case Direction::west: --nb.col; break;
      case Direction::south: ++nb.row; break;
      case Direction::north: --nb.row; break;
    }
    if (nb.row < 0 || nb.row >= g.rows() || nb.col < 0 || nb.col >= g.cols()) {
      if (!o.periodic) return -1;
      nb.row = (nb.row + g.rows()) % g.rows();
      nb.col = (nb.col + g.cols()) % g.cols();
    }
    return g.node_of(node, nb.row * g.cols() + nb.col);
  };
  // The slowest route of this rank's messages (a periodic wrap crosses the whole row or column).
  double latency = 0;
  for (int ln : c.local_nodes()) {
    for (int d = 0; d < 4; ++d) {
      int nb = neighbour(ln, d);
      if (nb >= 0) latency = std::max(latency, c.mesh().route_latency(ln, nb));
    }
  }
  return c.run(rec, op, latency, [&](NodeCtx& n) {
    const auto& buf = o.nodes[n.local()];
    std::vector<NodeCtx::Pending> ps;
    // The message a node sends towards d carries sub-tag 1 + d, so that two directions to the
    // same neighbour (a periodic group of two) stay apart.
    for (int d = 0; d < 4; ++d) {
      int nb = neighbour(n.node(), d);
      int opp = d ^ 1;
      if (nb >= 0) ps.push_back(n.recv(nb, 1 + opp, buf.recv[d], o.count[opp] * t.size));
    }
    for (int d = 0; d < 4; ++d) {
      int nb = neighbour(n.node(), d);
      if (nb >= 0) ps.push_back(n.send(nb, 1 + d, buf.send[d], o.count[d] * t.size));
    }
    n.wait_all(ps);
  });
}

// ---- send / recv -----------------------------------------------------------------------------

namespace {
CollectiveRecord p2p(MeshComm& c, const SendRecvOptions& o, bool is_send) {
  const char* what = is_send ? "send" : "recv";
  check_common(c, what, o);
  ElemType t = ElemType::make(o.dtype, o.cfp8_bias);
  const Mesh& m = c.mesh();
  TESSERA_CHECK_INDEX(o.from >= 0 && o.from < m.size() && o.to >= 0 && o.to < m.size(), what,
                      ": nodes ", o.from, " -> ", o.to, " are outside mesh '", m.name(), "' (",
                      m.size(), " nodes)");
  TESSERA_CHECK(o.from != o.to, what, ": a node cannot send to itself (node ", to_string(m.coord(o.from)), ")");
  int mine = is_send ? o.from : o.to;
  TESSERA_CHECK(c.hosts(mine), what, ": rank ", c.rank(), " does not host node ",
                to_string(m.coord(mine)), " (the ", is_send ? "sender" : "receiver", ")");
  TESSERA_CHECK(o.count == 0 || o.buffer != nullptr, what, ": buffer is null");
  check_size(what, o.count, 1, t.size);
  size_t bytes = o.count * t.size;
  OpContext op(c, std::string(what) + " " + to_string(m.coord(o.from)) + "->" + to_string(m.coord(o.to)),
               o.tag, c.timeout_or_default(o.timeout));
  CollectiveRecord rec = make_record(OpKind::sendrecv, Algorithm::auto_, c.world(), o.count, o.dtype);
  rec.algorithm = "direct";
  double latency = is_send ? m.route_latency(o.from, o.to) : 0;
  return c.run_rank(rec, op, latency, [&] {
    NodeCtx n(op, mine, c.local_index(mine));
    if (is_send) {
      if (c.hosts(o.to)) {
        // Both ends here: hand a copy to the receiver's queue and return.
        auto copy = std::make_shared<std::vector<char>>(static_cast<const char*>(o.buffer),
                                                        static_cast<const char*>(o.buffer) + bytes);
        auto p = std::make_shared<NodeCtx::Pending>(n.send(o.to, 0, copy->data(), bytes));
        c.keep_until_done(std::move(copy), std::move(p->req));
        return;
      }
      auto p = n.send(o.to, 0, o.buffer, bytes);
      n.wait(p);
    } else {
      auto p = n.recv(o.from, 0, o.buffer, bytes);
      n.wait(p);
    }
  });
}
}  // namespace

CollectiveRecord send(MeshComm& c, const SendRecvOptions& o) { return p2p(c, o, true); }
CollectiveRecord recv(MeshComm& c, const SendRecvOptions& o) { return p2p(c, o, false); }

}  // namespace tessera::comms
