#include <tessera/core/precision.h>

#include <tessera/kernels/reduce.h>

#include <cmath>

namespace tessera {

const char* precision_name(Precision p) {
  switch (p) {
    case Precision::fp32: return "fp32";
    case Precision::bf16: return "bf16";
    case Precision::cfp8: return "cfp8";
  }
  return "?";
}

Precision precision_from_name(const std::string& s) {
  if (s == "fp32" || s == "f32") return Precision::fp32;
  if (s == "bf16") return Precision::bf16;
  if (s == "cfp8") return Precision::cfp8;
  TESSERA_THROW(ValueError, "unknown precision '", s, "' (known: fp32, bf16, cfp8)");
}

int cfp8_bias_for_amax(float amax, Cfp8Layout layout, int margin) {
  if (!(amax > 0) || !std::isfinite(amax)) return cfp8_default_bias(layout);
  double need = static_cast<double>(amax) * std::ldexp(1.0, margin);
  // cfp8_max halves with each bias step: find the largest bias whose max >= need.
  for (int bias = kCfp8MaxBias; bias >= 0; --bias) {
    if (cfp8_max({layout, bias}) >= need) return bias;
  }
  return 0;  // even bias 0 saturates: the widest range there is
}

void AmaxHistory::push(float amax) {
  h_.push_back(amax);
  while (static_cast<int>(h_.size()) > length_) h_.pop_front();
}

float AmaxHistory::max() const {
  float m = 0;
  for (float v : h_) m = std::max(m, v);
  return m;
}

float AmaxHistory::max_kept_after_push() const {
  float m = 0;
  const size_t drop = static_cast<int>(h_.size()) >= length_ ? h_.size() - static_cast<size_t>(length_) + 1 : 0;
  for (size_t i = drop; i < h_.size(); ++i) m = std::max(m, h_[i]);
  return m;
}

int PrecisionState::observe(const std::pair<int, int>& key, const float* x, size_t n, Cfp8Layout layout) {
  return observe_amax(key, n ? kernels::amax(x, n) : 0.f, layout);
}

int PrecisionState::observe_amax(const std::pair<int, int>& key, float a, Cfp8Layout layout) {
  auto it = hist_.try_emplace(key, policy_.history).first;
  if (std::isfinite(a)) it->second.push(a);  // a NaN/Inf step is skipped by the loss scaler
  return cfp8_bias_for_amax(it->second.max(), layout, policy_.margin);
}

int PrecisionState::predict(const std::pair<int, int>& key, Cfp8Layout layout) const {
  auto it = hist_.find(key);
  if (it == hist_.end() || it->second.empty()) return -1;
  return cfp8_bias_for_amax(it->second.max_kept_after_push(), layout, policy_.margin);
}

bool PrecisionState::known_amax(int value, const float* x, size_t n, float& amax) const {
  auto it = run_amax_.find(value);
  if (it == run_amax_.end() || it->second.x != x || it->second.n != n) return false;
  amax = it->second.amax;
  return true;
}

void PrecisionState::remember_amax(int value, const float* x, size_t n, float amax) {
  run_amax_[value] = {x, n, amax};
}

bool PrecisionState::cached_narrow(int value, const float* x, size_t n, DType type, int bias, Tensor& out) const {
  auto it = run_narrow_.find(value);
  if (it == run_narrow_.end()) return false;
  const Narrow& c = it->second;
  if (c.x != x || c.n != n || c.type != type || c.bias != bias) return false;
  out = c.t;
  return true;
}

void PrecisionState::cache_narrow(int value, const float* x, size_t n, DType type, int bias, const Tensor& t) {
  run_narrow_[value] = {x, n, type, bias, t};
}

float PrecisionState::amax_of(int value, const float* x, size_t n) {
  float a;
  if (known_amax(value, x, n, a)) return a;
  a = n ? kernels::amax(x, n) : 0.f;
  remember_amax(value, x, n, a);
  wanted_.insert(value);
  return a;
}

}  // namespace tessera
