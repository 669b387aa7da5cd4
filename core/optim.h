// Optimizers on f32 master weights, learning-rate schedules and global-norm clipping.
//
//   auto opt = make_optimizer("sgd", {.lr = 0.05, .momentum = 0.9});
//   LrSchedule sched{LrSchedule::cosine, 0.05, /*warmup=*/100, /*total=*/5000};
//   clip_global_norm(grads, 1.0);
//   opt->step(params, grads, sched.at(step));
//
// Formulas are torch.optim.SGD's (momentum buffer b = mu b + g, first step b = g; nesterov
// uses g + mu b; weight decay adds wd * w to g) and torch.optim.AdamW's (decoupled decay
// w -= lr wd w, bias-corrected moments). State tensors are created on the first step and are
// part of checkpoints (state()).
#pragma once

#include <tessera/core/tensor.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

struct OptimizerOptions {
  double lr = 0.01;
  double momentum = 0.0;       // SGD
  bool nesterov = false;       // SGD
  double weight_decay = 0.0;   // SGD: L2 added to the gradient; AdamW: decoupled
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
};

class Optimizer {
 public:
  explicit Optimizer(OptimizerOptions o) : opt_(o) {}
  virtual ~Optimizer() = default;
  virtual const char* name() const = 0;
  // params[i] -= update(grads[i]); shapes must match (ValueError naming the index).
  void step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr);
  int64_t steps() const { return steps_; }
  const OptimizerOptions& options() const { return opt_; }
  // Named state tensors ("0.momentum", "0.m", "0.v", ...) and the step count, for checkpoints.
  std::map<std::string, Tensor>& state() { return state_; }
  void set_steps(int64_t s) { steps_ = s; }

 protected:
  virtual void update(size_t index, float* w, const float* g, size_t n, double lr) = 0;
  float* state_buffer(size_t index, const char* what, size_t n);
  OptimizerOptions opt_;
  int64_t steps_ = 0;
  std::map<std::string, Tensor> state_;
};

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, OptimizerOptions o);  // sgd | adamw

struct LrSchedule {
  enum Kind { constant, step, cosine } kind = constant;
  double base_lr = 0.01;
  int64_t warmup_steps = 0;  // linear warmup from 0 (all kinds)
  int64_t total_steps = 0;   // cosine: decays to 0 at total_steps
  int64_t step_size = 0;     // step: multiply by gamma every step_size steps
  double gamma = 0.1;
  double at(int64_t step) const;
};
LrSchedule::Kind lr_schedule_from_name(const std::string& s);

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
double clip_global_norm(const std::vector<Tensor>& grads, double max_norm);
double global_norm(const std::vector<Tensor>& grads);

// Dynamic loss scaling: multiply the loss gradient by scale(); after backward, update() checks
// the gradients. Inf/NaN: the step is skipped and the scale backs off; after `growth_interval`
// clean steps in a row the scale grows.
class LossScaler {
 public:
  explicit LossScaler(double init = 65536.0, double growth = 2.0, double backoff = 0.5,
                      int64_t growth_interval = 2000);
  double scale() const { return scale_; }
  // Returns true when the step should be applied; then the gradients have been unscaled.
  bool unscale_and_check(const std::vector<Tensor>& grads);
  int64_t skipped() const { return skipped_; }
  int64_t clean_run() const { return clean_; }
  void set_state(double scale, int64_t clean, int64_t skipped) {
    scale_ = scale;
    clean_ = clean;
    skipped_ = skipped;
  }

 private:
  double scale_, growth_, backoff_;
  int64_t interval_, clean_ = 0, skipped_ = 0;
};

}  // namespace tessera
