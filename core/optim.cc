#include <tessera/core/optim.h>

#include <tessera/kernels/elementwise.h>
#include <tessera/kernels/optimizer.h>
#include <tessera/kernels/reduce.h>

#include <cmath>

namespace tessera {

void Optimizer::step(const std::vector<Tensor>& params, const std::vector<Tensor>& grads, double lr) {
  TESSERA_CHECK(params.size() == grads.size(), name(), ": ", params.size(), " parameters but ", grads.size(),
                " gradients");
  ++steps_;
  for (size_t i = 0; i < params.size(); ++i) {
    TESSERA_CHECK(params[i].shape() == grads[i].shape() && params[i].dtype() == DType::f32 &&
                      grads[i].dtype() == DType::f32 && params[i].is_contiguous() && grads[i].is_contiguous(),
                  name(), ": parameter ", i, " ", params[i].shape().str(), " and its gradient ",
                  grads[i].shape().str(), " must be contiguous f32 of one shape");
    update(i, params[i].data<float>(), grads[i].data<float>(), static_cast<size_t>(params[i].numel()), lr);
  }
}

float* Optimizer::state_buffer(size_t index, const char* what, size_t n) {
  std::string key = std::to_string(index) + "." + what;
  auto it = state_.find(key);
  if (it == state_.end()) it = state_.emplace(key, Tensor::zeros({static_cast<int64_t>(n)})).first;
  TESSERA_CHECK(static_cast<size_t>(it->second.numel()) == n, name(), ": state '", key, "' has ",
                it->second.numel(), " elements, parameter has ", n);
  return it->second.data<float>();
}

namespace {

class Sgd : public Optimizer {
 public:
  using Optimizer::Optimizer;
  const char* name() const override { return "sgd"; }

 protected:
  void update(size_t index, float* w, const float* g, size_t n, double lr) override {
    kernels::SgdOptions o;
    o.lr = lr;
    o.momentum = opt_.momentum;
    o.weight_decay = opt_.weight_decay;
    o.nesterov = opt_.nesterov;
    // The buffer's first step is its own: a parameter's buffer starts when it first gets one.
    std::string key = std::to_string(index) + ".momentum";
    int64_t buf_step = opt_.momentum != 0 && !state_.count(key) ? 1 : steps_;
    float* buf = opt_.momentum != 0 ? state_buffer(index, "momentum", n) : nullptr;
    kernels::sgd_step(w, g, buf, n, o, buf_step);
  }
};

class AdamW : public Optimizer {
 public:
  using Optimizer::Optimizer;
  const char* name() const override { return "adamw"; }

 protected:
  void update(size_t index, float* w, const float* g, size_t n, double lr) override {
    kernels::AdamWOptions o;
    o.lr = lr;
    o.beta1 = opt_.beta1;
    o.beta2 = opt_.beta2;
    o.eps = opt_.eps;
    o.weight_decay = opt_.weight_decay;
    kernels::adamw_step(w, g, state_buffer(index, "m", n), state_buffer(index, "v", n), n, o, steps_);
  }
};

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const std::string& name, OptimizerOptions o) {
  TESSERA_CHECK(o.lr >= 0 && std::isfinite(o.lr), "learning rate ", o.lr, " must be finite and >= 0");
  TESSERA_CHECK(o.momentum >= 0 && o.momentum < 1, "momentum ", o.momentum, " must be in [0, 1)");
  TESSERA_CHECK(!o.nesterov || o.momentum > 0, "nesterov needs momentum > 0");
  if (name == "sgd") return std::make_unique<Sgd>(o);
  if (name == "adamw") return std::make_unique<AdamW>(o);
  TESSERA_THROW(ValueError, "unknown optimizer '", name, "' (known: sgd, adamw)");
}

LrSchedule::Kind lr_schedule_from_name(const std::string& s) {
  if (s == "constant") return LrSchedule::constant;
  if (s == "step") return LrSchedule::step;
  if (s == "cosine") return LrSchedule::cosine;
  TESSERA_THROW(ValueError, "unknown learning-rate schedule '", s, "' (known: constant, step, cosine)");
}

double LrSchedule::at(int64_t s) const {
  if (warmup_steps > 0 && s < warmup_steps) return base_lr * static_cast<double>(s + 1) / warmup_steps;
  switch (kind) {
    case constant: return base_lr;
    case step: return step_size > 0 ? base_lr * std::pow(gamma, static_cast<double>(s / step_size)) : base_lr;
    case cosine: {
      int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
      double progress = std::min(1.0, static_cast<double>(s - warmup_steps) / span);
      return 0.5 * base_lr * (1 + std::cos(3.141592653589793 * progress));
    }
  }
  return base_lr;
}

double global_norm(const std::vector<Tensor>& grads) {
  double sq = 0;
  for (const Tensor& g : grads) {
    const float* p = g.data<float>();
    const size_t n = static_cast<size_t>(g.numel());
    double s = kernels::sum_squares(p, n);
    // The f32 sum overflows once elements pass ~1.8e19 although every element is finite; redo
    // it in double so such gradients are neither reported as Inf/NaN (a spurious loss-scaler
    // skip) nor left unclipped. Real Inf elements still give Inf, NaN stays NaN.
    if (std::isinf(s)) {
      s = 0;
      for (size_t i = 0; i < n; ++i) s += static_cast<double>(p[i]) * p[i];
    }
    sq += s;
  }
  return std::sqrt(sq);
}

double clip_global_norm(const std::vector<Tensor>& grads, double max_norm) {
  TESSERA_CHECK(max_norm > 0, "clip_global_norm: max_norm ", max_norm, " must be > 0");
  double norm = global_norm(grads);
  if (std::isfinite(norm) && norm > max_norm) {
    float s = static_cast<float>(max_norm / (norm + 1e-6));
    for (const Tensor& g : grads) kernels::scale(s, g.data<float>(), g.data<float>(), static_cast<size_t>(g.numel()));
  }
  return norm;
}

LossScaler::LossScaler(double init, double growth, double backoff, int64_t growth_interval)
    : scale_(init), growth_(growth), backoff_(backoff), interval_(growth_interval) {
  TESSERA_CHECK(init > 0 && growth > 1 && backoff > 0 && backoff < 1 && growth_interval > 0,
                "LossScaler: bad settings init=", init, " growth=", growth, " backoff=", backoff,
                " interval=", growth_interval);
}

bool LossScaler::unscale_and_check(const std::vector<Tensor>& grads) {
  if (!std::isfinite(global_norm(grads))) {
    scale_ = std::max(scale_ * backoff_, 1.0);
    clean_ = 0;
    ++skipped_;
    return false;
  }
  float inv = static_cast<float>(1.0 / scale_);
  for (const Tensor& g : grads) kernels::scale(inv, g.data<float>(), g.data<float>(), static_cast<size_t>(g.numel()));
  if (++clean_ >= interval_) {
    scale_ *= growth_;
    clean_ = 0;
  }
  return true;
}

}  // namespace tessera
