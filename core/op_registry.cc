#include <tessera/core/op_registry.h>

#include <mutex>

namespace tessera {

// Each op family lives in its own file (core/ops_*.cc) and registers here.
void register_linalg_ops(OpRegistry& r);
void register_elementwise_ops(OpRegistry& r);
void register_loss_ops(OpRegistry& r);
void register_conv_ops(OpRegistry& r);
void register_transformer_ops(OpRegistry& r);

OpRegistry& op_registry() {
  static OpRegistry* r = [] {
    auto* reg = new OpRegistry;
    register_linalg_ops(*reg);
    register_elementwise_ops(*reg);
    register_loss_ops(*reg);
    register_conv_ops(*reg);
    register_transformer_ops(*reg);
    return reg;
  }();
  return *r;
}

void OpRegistry::add(OpDef def) {
  TESSERA_INTERNAL_ASSERT(def.infer && def.run, "op '", def.name, "' lacks infer or run");
  TESSERA_INTERNAL_ASSERT(!ops_.count(def.name), "op '", def.name, "' registered twice");
  std::string name = def.name;
  ops_.emplace(name, std::move(def));
}

const OpDef& OpRegistry::get(const std::string& name) const {
  auto it = ops_.find(name);
  if (it == ops_.end()) {
    std::string known;
    for (const auto& [k, v] : ops_) known += (known.empty() ? "" : ", ") + k;
    TESSERA_THROW(ValueError, "unknown op '", name, "' (registered: ", known, ")");
  }
  return it->second;
}

std::vector<std::string> OpRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : ops_) out.push_back(k);
  return out;
}

std::string op_where(const Node& n) {
  return n.scope.empty() ? n.op : n.op + " in layer '" + n.scope + "'";
}

OpCost op_cost(const Graph& g, int node_id) {
  const Node& n = g.node(node_id);
  const OpDef& def = op_registry().get(n.op);
  if (def.cost) return def.cost(n, g);
  OpCost c;
  for (int id : n.inputs) c.bytes += static_cast<double>(g.value(id).shape.numel()) * dtype_size(g.value(id).dtype);
  for (int id : n.outputs) {
    c.bytes += static_cast<double>(g.value(id).shape.numel()) * dtype_size(g.value(id).dtype);
    c.flops += static_cast<double>(g.value(id).shape.numel());
  }
  return c;
}

GradContext::GradContext(Graph& g, int node_id, std::vector<int> dy)
    : g_(g), node_id_(node_id), node_(g.node(node_id)), dy_(std::move(dy)) {}

int GradContext::apply1(const std::string& op, const std::vector<int>& inputs, Attrs attrs) {
  return g_.apply1(op, inputs, std::move(attrs), node_.scope);
}
std::vector<int> GradContext::apply(const std::string& op, const std::vector<int>& inputs, Attrs attrs) {
  return g_.apply(op, inputs, std::move(attrs), node_.scope);
}

}  // namespace tessera
