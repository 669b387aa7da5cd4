#include <tessera/core/autodiff.h>

#include <tessera/core/op_registry.h>

#include <algorithm>

namespace tessera {

int Gradients::of(int value) const {
  auto it = grad.find(value);
  TESSERA_CHECK(it != grad.end(), "value %", value, " does not influence the loss: no gradient");
  return it->second;
}

Gradients append_backward(Graph& g, int loss, const std::vector<int>& wrt) {
  const int n_forward = g.num_nodes();
  const Value& lv = g.value(loss);
  TESSERA_CHECK(lv.dtype == DType::f32, "loss must be an f32 value, got ", dtype_name(lv.dtype));

  // Values that depend on some `wrt` (forward reachability).
  std::vector<char> depends(g.num_values(), 0);
  for (int w : wrt) depends.at(w) = 1;
  for (int i = 0; i < n_forward; ++i) {
    const Node& n = g.node(i);
    bool any = std::any_of(n.inputs.begin(), n.inputs.end(), [&](int v) { return depends[v]; });
    if (any) for (int o : n.outputs) depends[o] = 1;
  }
  TESSERA_CHECK(depends[loss], "the loss does not depend on any of the ", wrt.size(), " values to differentiate");

  Gradients out;
  out.seed = g.input("loss_grad", lv.shape, DType::f32);
  std::map<int, int>& grad = out.grad;
  grad[loss] = out.seed;

  auto accumulate = [&](int value, int dv, const std::string& scope) {
    auto it = grad.find(value);
    if (it == grad.end()) {
      grad[value] = dv;
    } else {
      it->second = g.apply1("add", {it->second, dv}, {}, scope);
    }
  };

  for (int i = n_forward - 1; i >= 0; --i) {
    const Node node = g.node(i);  // copy: apply() below may grow the node vector
    std::vector<int> dy;
    bool any = false;
    for (int o : node.outputs) {
      auto it = grad.find(o);
      dy.push_back(it == grad.end() ? -1 : it->second);
      any |= it != grad.end();
    }
    if (!any) continue;
    bool needs = std::any_of(node.inputs.begin(), node.inputs.end(),
                             [&](int v) { return depends[v] && g.value(v).dtype == DType::f32; });
    if (!needs) continue;
    const OpDef& def = op_registry().get(node.op);
    if (!def.grad) {
      TESSERA_THROW(NotImplementedError, op_where(node), ": has no gradient rule, but the loss depends on it");
    }
    GradContext ctx(g, i, dy);
    Grads dx = def.grad(ctx);
    TESSERA_INTERNAL_ASSERT(dx.size() == node.inputs.size(), node.op, " gradient returned ", dx.size(),
                            " values for ", node.inputs.size(), " inputs");
    for (size_t k = 0; k < dx.size(); ++k) {
      int v = node.inputs[k];
      if (dx[k] < 0 || !depends[v]) continue;
      TESSERA_INTERNAL_ASSERT(g.value(dx[k]).shape == g.value(v).shape, node.op, " gradient for input ", k,
                              " has shape ", g.value(dx[k]).shape.str(), ", input has ", g.value(v).shape.str());
      accumulate(v, dx[k], node.scope);
    }
  }
  // Keep only what was asked for plus intermediates (callers look values up by id).
  for (int w : wrt) {
    TESSERA_CHECK(grad.count(w), "value '", g.value(w).name, "' does not influence the loss");
  }
  return out;
}

}  // namespace tessera
