// The op registry: each op declares, in one place, its shape/dtype inference and validation,
// its forward computation (through kernels/), its gradient rule (emitting graph ops), and its
// FLOP and byte counts (for the cost model).
//
//   OpDef d{"relu", 1};                       // in core/ops_elementwise.cc
//   d.infer = [](const Node& n, const Ins& in) { return Outs{{in[0]->shape, DType::f32}}; };
//   d.run = [](OpContext& c) { kernels::relu(...); };
//   d.grad = [](GradContext& g) { return Grads{g.apply1("relu_grad", {g.in(0), g.dy(0)})}; };
//   r.add(d);
//
// Op families live in core/ops_*.cc and are registered by op_registry() on first use (not by
// static initializers, which a static library would drop).
#pragma once

#include <tessera/core/error.h>
#include <tessera/core/graph.h>
#include <tessera/core/tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace tessera {

class PrecisionState;

// Per-run state an op may consult.
struct RunState {
  bool training = true;
  int64_t step = 0;
  uint64_t seed = 0;
  PrecisionState* precision = nullptr;  // cfp8 bias histories; may be null (fp32/bf16)
};

struct OpContext {
  const Graph& graph;
  int node_id;
  const Node& node;
  std::vector<const Tensor*> in;
  std::vector<Tensor*> out;  // preallocated, contiguous, shapes from inference
  RunState& state;
  // Value ids of `out`: node.outputs, or the last value of a fused chain (what readers read).
  std::vector<int> out_ids;
};

// Emits backward ops for one node.
class GradContext {
 public:
  GradContext(Graph& g, int node_id, std::vector<int> dy);
  // A copy: emitting ops may grow the graph's node list and move the original.
  const Node& node() const { return node_; }
  int in(int k) const { return node().inputs.at(k); }
  int out(int k) const { return node().outputs.at(k); }
  int dy(int k) const { return dy_.at(k); }  // -1 when that output has no gradient
  const Value& value(int id) const { return g_.value(id); }
  int apply1(const std::string& op, const std::vector<int>& inputs, Attrs attrs = {});
  std::vector<int> apply(const std::string& op, const std::vector<int>& inputs, Attrs attrs = {});
  Graph& graph() { return g_; }

 private:
  Graph& g_;
  int node_id_;
  Node node_;
  std::vector<int> dy_;
};

struct OpCost {
  double flops = 0;
  double bytes = 0;  // read + written
};

using Ins = std::vector<const Value*>;
using Outs = std::vector<ValueType>;
using Grads = std::vector<int>;  // one per input, -1 for none

// What the executor may fold into a producer's store (GEMM/conv epilogues): a bias along the
// last dimension, then an activation; or (max-pool gradient) a following relu_grad's mask.
enum class FusedAct { none, relu };
struct Epilogue {
  const Tensor* bias = nullptr;  // f32 [last dim], or null
  FusedAct act = FusedAct::none;
  const Tensor* relu_mask = nullptr;  // relu_grad(mask, out) absorbed: out where mask > 0, else 0
};

struct OpDef {
  OpDef() = default;
  OpDef(std::string op_name, int inputs) : name(std::move(op_name)), num_inputs(inputs) {}
  std::string name;
  int num_inputs = -1;  // -1: variadic
  std::function<Outs(const Node&, const Ins&)> infer;
  std::function<void(OpContext&)> run;
  // Optional: run with an epilogue applied before the single output is stored (the executor
  // uses it to absorb a following bias_add and/or relu).
  std::function<void(OpContext&, const Epilogue&)> run_fused;
  std::function<Grads(GradContext&)> grad;  // empty: not differentiable
  std::function<OpCost(const Node&, const Graph&)> cost;  // empty: elementwise default
};

class OpRegistry {
 public:
  void add(OpDef def);
  const OpDef& get(const std::string& name) const;  // ValueError naming unknown ops
  bool has(const std::string& name) const { return ops_.count(name) != 0; }
  std::vector<std::string> names() const;

 private:
  std::map<std::string, OpDef> ops_;
};

OpRegistry& op_registry();
OpCost op_cost(const Graph& g, int node_id);

// "matmul in layer 'fc2'" / "matmul": the prefix of every op error message.
std::string op_where(const Node& n);



}  // namespace tessera

#define TESSERA_OP_CHECK(node, cond, ...) \
  TESSERA_CHECK(cond, ::tessera::op_where(node), ": ", __VA_ARGS__)
