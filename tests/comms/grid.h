// The collective parameter grid shared by the loopback, mpi and grpc tests (Gloo style):
// collective x scope x count x dtype x algorithm x in-place, integer-valued inputs so the
// expected values are exact. Each rank checks the buffers of the nodes it hosts.
#pragma once

#include <tessera/comms/collectives.h>
#include <tessera/core/bf16.h>
#include <tessera/core/cfp8.h>

#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace tessera::comms::testing {

struct Case {
  OpKind kind = OpKind::allreduce;
  Scope scope = Scope::world;
  size_t count = 0;
  DType dtype = DType::f32;
  Algorithm algorithm = Algorithm::ring;
  bool in_place = false;
  ReduceOp op = ReduceOp::sum;
  size_t chunk_bytes = 64;  // tiny: multi-segment paths run on small inputs

  std::string str() const {
    std::ostringstream os;
    os << op_kind_name(kind) << "/" << scope_name(scope) << "/n=" << count << "/" << dtype_name(dtype)
       << "/" << algorithm_name(algorithm) << (in_place ? "/in-place" : "") << "/"
       << reduce_op_name(op) << "/chunk=" << chunk_bytes;
    return os.str();
  }
};

// Integer-valued inputs small enough that every partial sum is exact in the type: bf16 and
// f32 get 0..4 (sums of 15 nodes <= 60), cfp8 gets 0/1 with at most 5 ones among any 15 nodes.
inline float input_value(DType t, int node, size_t i) {
  if (is_cfp8(t)) return (static_cast<size_t>(node) + i) % 3 == 0 ? 1.0f : 0.0f;
  return static_cast<float>((static_cast<size_t>(node) * 7 + i * 3) % 5);
}

inline Cfp8Format fmt_of(DType t) {
  Cfp8Layout l = t == DType::cfp8_e4m3 ? Cfp8Layout::e4m3 : Cfp8Layout::e5m2;
  return {l, cfp8_default_bias(l)};
}

inline void store(DType t, void* buf, size_t i, float v) {
  switch (t) {
    case DType::f32: static_cast<float*>(buf)[i] = v; break;
    case DType::bf16: static_cast<uint16_t*>(buf)[i] = f32_to_bf16(v); break;
    default: static_cast<uint8_t*>(buf)[i] = cfp8_encode(v, fmt_of(t));
  }
}
inline float load(DType t, const void* buf, size_t i) {
  switch (t) {
    case DType::f32: return static_cast<const float*>(buf)[i];
    case DType::bf16: return bf16_to_f32(static_cast<const uint16_t*>(buf)[i]);
    default: return cfp8_decode(static_cast<const uint8_t*>(buf)[i], fmt_of(t));
  }
}

inline float combine(ReduceOp op, float a, float b) {
  switch (op) {
    case ReduceOp::sum: return a + b;
    case ReduceOp::prod: return a * b;
    case ReduceOp::min: return std::min(a, b);
    case ReduceOp::max: return std::max(a, b);
  }
  return a;
}

using Buffer = std::vector<char>;

inline std::vector<Buffer> make_buffers(size_t n, size_t elems, DType t, char fill = 0x5a) {
  return std::vector<Buffer>(n, Buffer(std::max<size_t>(elems, 1) * dtype_size(t), fill));
}

// Runs one case on this rank; "" when every hosted buffer holds the expected values, else a
// description of the first few wrong elements. Exceptions propagate.
inline std::string run_case(MeshComm& c, const Case& k, uint64_t tag = 0) {
  Group g(c, k.scope);
  const auto& nodes = c.local_nodes();
  const size_t L = nodes.size(), p = static_cast<size_t>(g.size()), es = dtype_size(k.dtype);
  std::ostringstream err;
  int errors = 0;
  auto expect = [&](int node, size_t i, float want, float got) {
    if (want == got) return;
    if (++errors <= 3) {
      err << " node " << to_string(c.mesh().coord(node)) << "[" << i << "]: want " << want << " got " << got << ";";
    }
  };
  auto fill_inputs = [&](std::vector<Buffer>& in, size_t elems) {
    for (size_t l = 0; l < L; ++l)
      for (size_t i = 0; i < elems; ++i) store(k.dtype, in[l].data(), i, input_value(k.dtype, nodes[l], i));
  };
  auto reduced = [&](int node, size_t i) {  // the reduction over node's group of element i
    float acc = input_value(k.dtype, g.node_of(node, 0), i);
    for (size_t m = 1; m < p; ++m) acc = combine(k.op, acc, input_value(k.dtype, g.node_of(node, static_cast<int>(m)), i));
    return acc;
  };
  auto common = [&](CollectiveOptions& o) {
    o.dtype = k.dtype;
    o.algorithm = k.algorithm;
    o.chunk_bytes = k.chunk_bytes;
    o.tag = tag;
  };

  switch (k.kind) {
    case OpKind::allreduce: {
      auto in = make_buffers(L, k.count, k.dtype), out = make_buffers(L, k.count, k.dtype);
      fill_inputs(in, k.count);
      AllreduceOptions o;
      common(o);
      o.count = k.count;
      o.op = k.op;
      for (size_t l = 0; l < L; ++l) {
        o.inputs.push_back(in[l].data());
        o.outputs.push_back(k.in_place ? in[l].data() : out[l].data());
      }
      allreduce(g, o);
      for (size_t l = 0; l < L; ++l)
        for (size_t i = 0; i < k.count; ++i) expect(nodes[l], i, reduced(nodes[l], i), load(k.dtype, o.outputs[l], i));
      break;
    }
    case OpKind::reduce_scatter: {
      auto in = make_buffers(L, k.count * p, k.dtype), out = make_buffers(L, k.count, k.dtype);
      fill_inputs(in, k.count * p);
      ReduceScatterOptions o;
      common(o);
      o.count = k.count;
      o.op = k.op;
      for (size_t l = 0; l < L; ++l) {
        o.inputs.push_back(in[l].data());
        o.outputs.push_back(k.in_place ? in[l].data() : out[l].data());
      }
      reduce_scatter(g, o);
      for (size_t l = 0; l < L; ++l) {
        size_t m = static_cast<size_t>(g.member_of(nodes[l]));
        for (size_t i = 0; i < k.count; ++i)
          expect(nodes[l], i, reduced(nodes[l], m * k.count + i), load(k.dtype, o.outputs[l], i));
      }
      break;
    }
    case OpKind::allgather: {
      auto in = make_buffers(L, k.count, k.dtype), out = make_buffers(L, k.count * p, k.dtype);
      fill_inputs(in, k.count);
      AllgatherOptions o;
      common(o);
      o.count = k.count;
      for (size_t l = 0; l < L; ++l) {
        if (k.in_place) {  // the input already sits at its block of the output
          size_t m = static_cast<size_t>(g.member_of(nodes[l]));
          if (k.count) std::memcpy(out[l].data() + m * k.count * es, in[l].data(), k.count * es);
          o.inputs.push_back(out[l].data() + m * k.count * es);
        } else {
          o.inputs.push_back(in[l].data());
        }
        o.outputs.push_back(out[l].data());
      }
      allgather(g, o);
      for (size_t l = 0; l < L; ++l)
        for (size_t m = 0; m < p; ++m)
          for (size_t i = 0; i < k.count; ++i)
            expect(nodes[l], m * k.count + i, input_value(k.dtype, g.node_of(nodes[l], static_cast<int>(m)), i),
                   load(k.dtype, out[l].data(), m * k.count + i));
      break;
    }
    case OpKind::broadcast: {
      auto buf = make_buffers(L, k.count, k.dtype);
      int root = static_cast<int>(p / 2);
      BroadcastOptions o;
      common(o);
      o.count = k.count;
      o.root = root;
      for (size_t l = 0; l < L; ++l) {
        if (g.member_of(nodes[l]) == root)
          for (size_t i = 0; i < k.count; ++i) store(k.dtype, buf[l].data(), i, input_value(k.dtype, nodes[l], i));
        o.buffers.push_back(buf[l].data());
      }
      broadcast(g, o);
      for (size_t l = 0; l < L; ++l)
        for (size_t i = 0; i < k.count; ++i)
          expect(nodes[l], i, input_value(k.dtype, g.node_of(nodes[l], root), i), load(k.dtype, buf[l].data(), i));
      break;
    }
    case OpKind::barrier: {
      BarrierOptions o;
      common(o);
      barrier(g, o);
      break;
    }
    case OpKind::halo: {
      // Each node sends count[d] = count + d elements towards d: value = node*100 + d*10 + i%10.
      HaloOptions o;
      common(o);
      o.periodic = k.in_place;  // reuse the flag: periodic variant
      for (int d = 0; d < 4; ++d) o.count[d] = k.count + static_cast<size_t>(d);
      std::vector<std::array<Buffer, 4>> send(L), recv(L);
      for (size_t l = 0; l < L; ++l) {
        HaloOptions::Buffers b;
        for (int d = 0; d < 4; ++d) {
          send[l][d] = Buffer((k.count + 4) * es);
          recv[l][d] = Buffer((k.count + 4) * es, 0);
          for (size_t i = 0; i < o.count[d]; ++i)
            store(k.dtype, send[l][d].data(), i, static_cast<float>((nodes[l] % 3) * 4 + d + i % 2));
          b.send[d] = send[l][d].data();
          b.recv[d] = recv[l][d].data();
        }
        o.nodes.push_back(b);
      }
      halo_exchange(g, o);
      for (size_t l = 0; l < L; ++l) {
        Coord me = g.member_coord(g.member_of(nodes[l]));
        for (int d = 0; d < 4; ++d) {
          bool active = k.scope == Scope::world || (k.scope == Scope::rows ? d < 2 : d >= 2);
          if (!active) continue;
          Coord nb = me;
          nb.col += d == 0 ? 1 : d == 1 ? -1 : 0;
          nb.row += d == 2 ? 1 : d == 3 ? -1 : 0;
          bool inside = nb.row >= 0 && nb.row < g.rows() && nb.col >= 0 && nb.col < g.cols();
          if (!inside && !o.periodic) continue;
          nb.row = (nb.row + g.rows()) % g.rows();
          nb.col = (nb.col + g.cols()) % g.cols();
          int nb_node = g.node_of(nodes[l], nb.row * g.cols() + nb.col);
          int opp = d ^ 1;
          for (size_t i = 0; i < o.count[opp]; ++i)
            expect(nodes[l], static_cast<size_t>(d) * 1000 + i, static_cast<float>((nb_node % 3) * 4 + opp + i % 2),
                   load(k.dtype, recv[l][d].data(), i));
        }
      }
      break;
    }
    default: break;
  }
  if (errors) return k.str() + ": " + std::to_string(errors) + " wrong element(s):" + err.str();
  return "";
}

// The grid. `big` adds 1<<20-element cases for a subset.
inline std::vector<Case> grid(bool big, bool with_e5m2 = true) {
  std::vector<Case> out;
  const DType dtypes[] = {DType::f32, DType::bf16, DType::cfp8_e4m3};
  const size_t counts[] = {0, 1, 7, 1009};
  for (OpKind kind : {OpKind::allreduce, OpKind::reduce_scatter, OpKind::allgather, OpKind::broadcast}) {
    for (Scope s : {Scope::world, Scope::rows, Scope::cols}) {
      for (size_t n : counts) {
        for (DType t : dtypes) {
          for (Algorithm a : {Algorithm::ring, Algorithm::mesh2d}) {
            for (bool ip : {false, true}) {
              if (kind == OpKind::broadcast && ip) continue;
              Case k;
              k.kind = kind;
              k.scope = s;
              k.count = n;
              k.dtype = t;
              k.algorithm = a;
              k.in_place = ip;
              out.push_back(k);
            }
          }
        }
      }
    }
  }
  if (with_e5m2) {
    for (Algorithm a : {Algorithm::ring, Algorithm::mesh2d}) {
      Case k;
      k.count = 1009;
      k.dtype = DType::cfp8_e5m2;
      k.algorithm = a;
      out.push_back(k);
    }
  }
  // Segments smaller than one element (chunk_bytes rounds up to one element per message).
  for (OpKind kind : {OpKind::allreduce, OpKind::reduce_scatter, OpKind::allgather, OpKind::broadcast}) {
    for (size_t chunk : {size_t{1}, size_t{3}}) {
      Case k;
      k.kind = kind;
      k.count = 7;
      k.dtype = DType::bf16;
      k.algorithm = Algorithm::mesh2d;
      k.chunk_bytes = chunk;
      out.push_back(k);
    }
  }
  for (ReduceOp op : {ReduceOp::max, ReduceOp::min, ReduceOp::prod}) {
    Case k;
    k.count = 33;
    k.op = op;
    k.algorithm = Algorithm::mesh2d;
    out.push_back(k);
  }
  for (Scope s : {Scope::world, Scope::rows, Scope::cols}) {
    Case b;
    b.kind = OpKind::barrier;
    b.scope = s;
    out.push_back(b);
    for (bool periodic : {false, true}) {
      Case h;
      h.kind = OpKind::halo;
      h.scope = s;
      h.count = 5;
      h.in_place = periodic;
      out.push_back(h);
    }
  }
  if (big) {
    // 64 KiB segments (many messages, each small enough to be sent eagerly) and 1 MiB ones
    // (messages above 256 KiB: over grpc between co-located ranks, read from the sender's memory).
    for (Algorithm a : {Algorithm::ring, Algorithm::mesh2d}) {
      for (bool ip : {false, true}) {
        for (size_t seg : {size_t{64} << 10, size_t{1} << 20}) {
          Case k;
          k.count = size_t{1} << 20;
          k.algorithm = a;
          k.in_place = ip;
          k.chunk_bytes = seg;
          out.push_back(k);
        }
      }
    }
    for (DType t : {DType::bf16, DType::cfp8_e4m3}) {
      Case k;
      k.count = size_t{1} << 20;
      k.dtype = t;
      k.algorithm = Algorithm::mesh2d;
      k.chunk_bytes = 64 << 10;
      out.push_back(k);
    }
    // Every other collective at this size (reduce-scatter and all-gather: blocks of 1<<18, so
    // that the full buffer of a 4-node group is 1<<20), and all-reduce along rows and columns.
    for (OpKind kind : {OpKind::reduce_scatter, OpKind::allgather, OpKind::broadcast}) {
      for (Algorithm a : {Algorithm::ring, Algorithm::mesh2d}) {
        Case k;
        k.kind = kind;
        k.count = kind == OpKind::broadcast ? size_t{1} << 20 : size_t{1} << 18;
        k.algorithm = a;
        k.chunk_bytes = size_t{1} << 20;
        out.push_back(k);
      }
    }
    for (Scope s : {Scope::rows, Scope::cols}) {
      Case k;
      k.scope = s;
      k.count = size_t{1} << 20;
      k.algorithm = Algorithm::mesh2d;
      k.in_place = true;
      k.chunk_bytes = size_t{1} << 20;
      out.push_back(k);
    }
  }
  return out;
}

}  // namespace tessera::comms::testing
