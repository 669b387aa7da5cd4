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

int PrecisionState::observe(const std::pair<int, int>& key, const float* x, size_t n, Cfp8Layout layout) {
  float a = n ? kernels::amax(x, n) : 0.f;
  auto it = hist_.try_emplace(key, policy_.history).first;
  if (std::isfinite(a)) it->second.push(a);  // a NaN/Inf step is skipped by the loss scaler
  return cfp8_bias_for_amax(it->second.max(), layout, policy_.margin);
}

}  // namespace tessera
