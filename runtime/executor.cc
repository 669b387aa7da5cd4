#include <tessera/runtime/executor.h>
#include <tessera/core/precision.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace tessera {

Executor::Executor(const Graph& g, std::vector<int> fetch) : g_(g), fetch_(std::move(fetch)) {
  std::vector<char> needed(g.num_values(), 0);
  fetched_.assign(g.num_values(), 0);
  for (int v : fetch_) {
    g.value(v);  // range check
    needed[v] = 1;
    fetched_[v] = 1;
  }
  std::vector<char> run_node(g.num_nodes(), 0);
  for (int i = g.num_nodes() - 1; i >= 0; --i) {
    const Node& n = g.node(i);
    if (std::none_of(n.outputs.begin(), n.outputs.end(), [&](int o) { return needed[o]; })) continue;
    run_node[i] = 1;
    for (int in : n.inputs) needed[in] = 1;
  }
  for (int i = 0; i < g.num_nodes(); ++i) {
    if (run_node[i]) order_.push_back(i);
  }
  plan_fusion();
  last_use_.assign(g.num_values(), -1);
  for (size_t pos = 0; pos < order_.size(); ++pos) {
    // An absorbed node's inputs are read when its producer runs.
    const int at = fusion_[pos].skip ? fusion_[pos].fused_into : static_cast<int>(pos);
    for (int in : g.node(order_[pos]).inputs) last_use_[in] = std::max(last_use_[in], at);
  }
  values_.resize(g.num_values());
  bound_.assign(g.num_values(), 0);
  for (int id : order_) costs_.push_back(op_cost(g, id));
}

void Executor::plan_fusion() {
  fusion_.assign(order_.size(), {});
  if (const char* f = std::getenv("TESSERA_FUSION"); f && std::string(f) == "0") return;
  const int nv = g_.num_values();
  std::vector<int> uses(nv, 0), user(nv, -1), produced_at(nv, -1);
  for (size_t pos = 0; pos < order_.size(); ++pos) {
    const Node& n = g_.node(order_[pos]);
    for (int in : n.inputs) {
      ++uses[in];
      user[in] = static_cast<int>(pos);
    }
  }
  // The single scheduled reader of v, if v has exactly one and is not fetched.
  auto sole_user = [&](int v) { return uses[v] == 1 && !fetched_[v] ? user[v] : -1; };
  for (size_t pos = 0; pos < order_.size(); ++pos) {
    if (fusion_[pos].skip) continue;
    const Node& p = g_.node(order_[pos]);
    if (!op_registry().get(p.op).run_fused || p.outputs.size() != 1) continue;
    Fusion f;
    f.label = p.op;
    int cur = p.outputs[0];
    std::vector<int> absorbed;
    int next = sole_user(cur);
    if (p.op == "maxpool2d_grad" && next >= 0) {
      // relu_grad(y, maxpool2d_grad(...)): the gradient routed to each window's maximum is kept
      // where the relu output y is positive, in the same pass.
      const Node& r = g_.node(order_[next]);
      if (r.op == "relu_grad" && r.inputs[1] == cur && r.inputs[0] != cur) {
        f.relu_mask_value = r.inputs[0];
        f.label += "+relu_grad";
        fusion_[next].skip = true;
        fusion_[next].fused_into = static_cast<int>(pos);
        f.final_value = r.outputs[0];
        fusion_[pos] = f;
      }
      continue;
    }
    bool has_bias_input = p.op == "conv2d" && p.inputs.size() == 3;
    if (next >= 0 && !has_bias_input) {
      const Node& b = g_.node(order_[next]);
      int bias = b.op == "bias_add" && b.inputs[0] == cur ? b.inputs[1] : -1;
      if (bias >= 0 && g_.value(bias).kind != ValueKind::intermediate) {
        f.bias_value = bias;
        f.label += "+bias";
        absorbed.push_back(next);
        cur = b.outputs[0];
        next = sole_user(cur);
      }
    }
    if (next >= 0 && g_.node(order_[next]).op == "relu") {
      f.act = FusedAct::relu;
      f.label += "+relu";
      absorbed.push_back(next);
      cur = g_.node(order_[next]).outputs[0];
    }
    if (absorbed.empty()) continue;
    f.final_value = cur;
    for (int a : absorbed) {
      fusion_[a].skip = true;
      fusion_[a].fused_into = static_cast<int>(pos);
    }
    fusion_[pos] = f;
  }
}

void Executor::bind(int value, Tensor t) {
  const Value& v = g_.value(value);
  TESSERA_CHECK(v.kind != ValueKind::intermediate, "bind: value '", v.name, "' is computed by the graph, not an input");
  TESSERA_CHECK(t.defined(), "bind: tensor for '", v.name, "' is undefined");
  TESSERA_CHECK(t.shape() == v.shape && t.dtype() == v.dtype, "bind: '", v.name, "' expects ", v.shape.str(), " ",
                dtype_name(v.dtype), ", got ", t.shape().str(), " ", dtype_name(t.dtype()));
  values_[value] = t.contiguous();
  bound_[value] = 1;
}

Tensor Executor::allocate(const ValueType& vt) {
  size_t bytes = static_cast<size_t>(vt.shape.numel()) * dtype_size(vt.dtype);
  live_bytes_ += bytes;
  peak_bytes_ = std::max(peak_bytes_, live_bytes_);
  auto& free_list = pool_[bytes];
  while (!free_list.empty()) {
    auto s = std::move(free_list.back());
    free_list.pop_back();
    if (s.use_count() == 1) return Tensor::from_storage(std::move(s), vt.shape, vt.dtype);
  }
  return Tensor::empty(vt.shape, vt.dtype);
}

void Executor::release(int value) {
  Tensor& t = values_[value];
  if (!t.defined()) return;
  live_bytes_ -= t.nbytes();
  pool_[t.nbytes()].push_back(t.storage());
  t = Tensor();
}

void Executor::run(RunState& state) {
  for (int v : g_.inputs()) {
    if (last_use_[v] >= 0 || fetched_[v]) {
      TESSERA_CHECK(bound_[v], "run: input '", g_.value(v).name, "' is not bound");
    }
  }
  for (int v : g_.params()) {
    if (last_use_[v] >= 0 || fetched_[v]) {
      TESSERA_CHECK(bound_[v], "run: parameter '", g_.value(v).name, "' is not bound");
    }
  }
  // Fetched intermediates of the previous run go back to the pool.
  for (int v = 0; v < g_.num_values(); ++v) {
    if (!bound_[v] && values_[v].defined()) release(v);
  }
  live_bytes_ = 0;
  peak_bytes_ = 0;
  if (state.precision) state.precision->begin_run();  // amax memo: values are new this run
  for (size_t pos = 0; pos < order_.size(); ++pos) {
    const Fusion& fu = fusion_[pos];
    if (fu.skip) continue;
    int id = order_[pos];
    const Node& n = g_.node(id);
    const OpDef& def = op_registry().get(n.op);
    OpContext ctx{g_, id, n, {}, {}, state, {}};
    for (int in : n.inputs) {
      TESSERA_INTERNAL_ASSERT(values_[in].defined(), "value %", in, " (", g_.value(in).name, ") not computed before ", n.op);
      ctx.in.push_back(&values_[in]);
    }
    std::vector<int> outs = fu.final_value >= 0 ? std::vector<int>{fu.final_value} : n.outputs;
    ctx.out_ids = outs;
    for (int o : outs) {
      values_[o] = allocate({g_.value(o).shape, g_.value(o).dtype});
      ctx.out.push_back(&values_[o]);
    }
    auto t0 = std::chrono::steady_clock::now();
    if (fu.final_value >= 0) {
      def.run_fused(ctx, Epilogue{fu.bias_value >= 0 ? &values_[fu.bias_value] : nullptr, fu.act,
                                  fu.relu_mask_value >= 0 ? &values_[fu.relu_mask_value] : nullptr});
    } else {
      def.run(ctx);
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    OpKindStats& st = stats_[fu.final_value >= 0 ? fu.label : n.op];
    st.calls++;
    st.seconds += s;
    st.flops += costs_[pos].flops;
    if (on_ready_) {
      for (int o : outs) on_ready_(o);
    }
    for (int in : n.inputs) {
      if (last_use_[in] == static_cast<int>(pos) && !bound_[in] && !fetched_[in]) release(in);
    }
    for (int o : outs) {  // outputs nobody reads (e.g. saved-for-backward, unused here)
      if (last_use_[o] < 0 && !fetched_[o]) release(o);
    }
  }
}

const Tensor& Executor::get(int value) const {
  TESSERA_CHECK(value >= 0 && value < g_.num_values() && (fetched_[value] || bound_[value]),
                "get: value %", value, " was not fetched by this executor");
  return values_[value];
}

std::string Executor::stats_table() const {
  std::vector<std::pair<std::string, OpKindStats>> rows(stats_.begin(), stats_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double total = 0;
  for (const auto& r : rows) total += r.second.seconds;
  std::ostringstream os;
  char line[160];
  std::snprintf(line, sizeof line, "%-26s %8s %10s %7s %10s\n", "op", "calls", "time ms", "share", "GFLOP/s");
  os << line;
  for (const auto& [name, st] : rows) {
    std::snprintf(line, sizeof line, "%-26s %8lld %10.2f %6.1f%% %10.1f\n", name.c_str(),
                  static_cast<long long>(st.calls), st.seconds * 1e3, total > 0 ? 100 * st.seconds / total : 0,
                  st.seconds > 0 ? st.flops / st.seconds / 1e9 : 0);
    os << line;
  }
  return os.str();
}

}  // namespace tessera
