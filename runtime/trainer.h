// Trainer: the single training path of DESIGN §1 on one node (a 1x1 mesh): trace the model,
// append the backward pass, apply the precision policy, run forward + backward + update with
// the executor, evaluate, checkpoint.
//
//   TrainOptions o;  o.precision = Precision::bf16;  o.epochs = 5;
//   Trainer t(models::make_model("mlp", o.seed), /*example=*/{28, 28, 1}, /*classes=*/10, o);
//   t.fit(train, test);                               // progress bar, accuracy per epoch
#pragma once

#include <tessera/core/data.h>
#include <tessera/core/nn.h>
#include <tessera/core/optim.h>
#include <tessera/core/precision.h>
#include <tessera/runtime/executor.h>

#include <fstream>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

struct TrainOptions {
  std::string model = "mlp";
  Precision precision = Precision::fp32;
  int64_t epochs = 1;
  int64_t batch_size = 64;
  std::string optimizer = "sgd";
  OptimizerOptions opt{0.05, 0.9};
  std::string schedule = "constant";  // constant | step | cosine
  int64_t warmup_steps = 0;
  int64_t lr_step_size = 0;  // step: decay every N steps (0: every epoch)
  double lr_gamma = 0.1;     // step: factor
  int64_t total_steps = 0;   // cosine: steps to decay over (0: the whole fit())
  double clip_norm = 0;      // 0: no clipping
  uint64_t seed = 1;
  std::string checkpoint_dir;  // empty: no checkpoints
  bool resume = false;
  std::string metrics_path;    // JSON lines; empty: none
  int64_t eval_batch = 1000;
  int64_t max_steps = -1;      // stop early (tests, benchmarks); -1: full epochs
  bool progress = true;        // progress bar on stderr
  Cfp8Policy cfp8;
  DType input_dtype = DType::f32;    // i32 for token ids
  std::vector<int64_t> label_shape;  // per-example label dims: {} for one class label, {T} per token

  // Data parallelism (runtime/data_parallel.h). batch_size is per mesh node; the global batch
  // is batch_size * world_nodes, node n training on rows [n * batch_size, (n + 1) * batch_size).
  int world_nodes = 1;
  std::vector<int> hosted_nodes{0};   // the nodes this rank runs, in the sync's order
  class GradientSync* grad_sync = nullptr;
  bool chief = true;                  // prints, evaluates, writes metrics and checkpoints
  bool loss_scaling = true;    // dynamic loss scaling for bf16 / cfp8
};

struct EpochReport {
  int64_t epoch = 0;
  double train_loss = 0;     // mean over the epoch's steps
  double test_accuracy = 0;  // fraction in [0, 1]
  double seconds = 0;        // training time (excluding evaluation)
  double images_per_s = 0;
};

class Trainer {
 public:
  Trainer(std::shared_ptr<nn::Module> model, const Shape& example, int64_t classes, TrainOptions o);
  ~Trainer();

  // One optimizer step on this rank's batch: batch_size examples per hosted node, the hosted
  // nodes' slices one after another. Returns the loss (the global mean under data
  // parallelism). A step with Inf/NaN gradients is skipped everywhere (loss scaling backs off)
  // and counted in skipped_steps().
  double step(const Batch& b);
  double evaluate(const Dataset& d);  // accuracy in [0, 1]
  std::vector<EpochReport> fit(const Dataset& train, const Dataset& test, std::ostream& out);

  void save_checkpoint(const std::string& dir) const;
  void load_checkpoint(const std::string& dir);

  int64_t global_step() const { return global_step_; }
  int64_t skipped_steps() const { return scaler_.skipped(); }
  const LossScaler& loss_scaler() const { return scaler_; }
  LossScaler& loss_scaler() { return scaler_; }
  const Graph& train_graph() const { return train_trace_->graph(); }
  const Executor& train_executor() const { return *train_exec_; }
  const std::vector<std::pair<std::string, nn::Parameter*>>& parameters() const { return params_; }
  PrecisionState& precision_state() { return precision_; }
  const TrainOptions& options() const { return opt_; }

 private:
  struct EvalProgram;
  EvalProgram& eval_program(int64_t batch);
  double lr_at(int64_t step) const;
  void write_metric(const std::string& json);
  Batch local_batch(const Batch& global) const;

  std::shared_ptr<nn::Module> model_;
  Shape example_;
  int64_t classes_;
  TrainOptions opt_;
  std::vector<std::pair<std::string, nn::Parameter*>> params_;
  std::unique_ptr<nn::Trace> train_trace_;
  std::unique_ptr<Executor> train_exec_;
  int x_ = -1, y_ = -1, loss_ = -1, seed_ = -1;
  std::vector<int> param_ids_, grad_ids_;
  std::map<int, int> grad_index_;              // gradient value id -> index in grad_ids_
  std::vector<Tensor> grad_accum_;             // several hosted nodes without a sync
  std::map<int64_t, std::unique_ptr<EvalProgram>> eval_;
  std::unique_ptr<Optimizer> optimizer_;
  LossScaler scaler_;
  PrecisionState precision_;
  LrSchedule schedule_;
  int64_t global_step_ = 0;
  int64_t loader_epoch_ = 0, loader_batch_ = 0;  // data position, saved in checkpoints
  std::unique_ptr<std::ofstream> metrics_;
  friend struct CheckpointIo;
};

}  // namespace tessera
