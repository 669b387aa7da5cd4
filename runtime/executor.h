// Executor for one node: runs the ops of a graph needed for a set of fetched values, in graph
// order, through the op registry's kernels. Buffers of intermediates are returned to a pool at
// their last use and reused by later ops of the same byte size, so a training step's memory is
// bounded by the live set, not the whole graph. Reports peak bytes and time per op kind.
// matmul / conv2d nodes absorb a following bias_add and relu into their epilogue when nothing
// else reads the intermediate values (TESSERA_FUSION=0 turns this off).
//
//   Executor ex(g, {loss, dw});
//   ex.bind(x, batch);  ex.bind(w, weights);  ex.bind(grads.seed, Tensor::full({}, 1.0));
//   ex.run(state);
//   float l = ex.get(loss).item();
//
// Bound tensors (inputs, params) are used in place and never freed by the executor. Fetched
// values stay valid until the next run(). Not thread-safe; one executor per thread.
#pragma once

#include <tessera/core/graph.h>
#include <tessera/core/op_registry.h>
#include <tessera/core/tensor.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

struct OpKindStats {
  int64_t calls = 0;
  double seconds = 0;
  double flops = 0;
};

class Executor {
 public:
  Executor(const Graph& g, std::vector<int> fetch);

  void bind(int value, Tensor t);  // ValueError on shape/dtype mismatch, naming the value
  void run(RunState& state);
  const Tensor& get(int value) const;

  size_t peak_bytes() const { return peak_bytes_; }  // intermediates, measured on the last run
  const std::map<std::string, OpKindStats>& op_stats() const { return stats_; }
  void reset_stats() { stats_.clear(); }
  std::string stats_table() const;
  const std::vector<int>& schedule() const { return order_; }
  // Called on the executing thread right after each value is computed (e.g. to start sending a
  // gradient while the backward pass goes on). Empty: none.
  void set_on_ready(std::function<void(int value)> fn) { on_ready_ = std::move(fn); }

 private:
  Tensor allocate(const ValueType& vt);
  void release(int value);

  const Graph& g_;
  std::vector<int> fetch_;
  std::vector<int> order_;         // node ids to run
  std::vector<int> last_use_;      // per value: last node (position in order_) reading it
  std::vector<char> fetched_;
  std::vector<Tensor> values_;
  std::vector<char> bound_;
  std::map<size_t, std::vector<std::shared_ptr<Storage>>> pool_;
  size_t live_bytes_ = 0, peak_bytes_ = 0;
  std::map<std::string, OpKindStats> stats_;
  std::vector<OpCost> costs_;
  std::function<void(int)> on_ready_;

  // Epilogue fusion, planned once: a matmul/conv2d whose only consumer is a bias_add of a bound
  // bias and/or a relu stores the activated result directly; the absorbed nodes are skipped and
  // the intermediate values never exist.
  struct Fusion {
    bool skip = false;      // this node was absorbed into an earlier producer
    int final_value = -1;   // >= 0: run fused, writing this value
    int bias_value = -1;
    FusedAct act = FusedAct::none;
    int relu_mask_value = -1;  // maxpool2d_grad + relu_grad: relu_grad's mask input
    int fused_into = -1;       // skipped nodes: the position of the producer that absorbed them
    std::string label;      // stats name, e.g. "matmul+bias+relu"
  };
  std::vector<Fusion> fusion_;
  void plan_fusion();
};

}  // namespace tessera
