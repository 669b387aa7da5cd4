// Precision policy (DESIGN §3): master weights and optimizer state stay f32; GEMM/conv inputs
// are rounded to bf16 or cfp8; accumulation is f32.
//
//   fp32  everything f32
//   bf16  GEMM/conv operands bf16 (round to nearest even)
//   cfp8  GEMM/conv operands cfp8: e4m3 in the forward pass, e5m2 for gradients (by default),
//         each tensor with its own exponent bias chosen from a short history of its amax
//
// Bias selection: the largest bias (finest resolution) whose max still covers the largest
// amax seen in the last `history` steps times 2^margin. Weights, activations and gradients
// each have their own history (keyed by graph node and operand).
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/tensor.h>

#include <deque>
#include <map>
#include <string>
#include <utility>

namespace tessera {

enum class Precision { fp32, bf16, cfp8 };
const char* precision_name(Precision p);
Precision precision_from_name(const std::string& s);  // ValueError naming the bad value

struct Cfp8Policy {
  Cfp8Layout forward = Cfp8Layout::e4m3;
  Cfp8Layout gradient = Cfp8Layout::e5m2;
  int history = 16;      // steps of amax remembered per tensor
  int margin = 0;        // headroom in powers of two above the remembered amax
  Rounding rounding = Rounding::nearest_even;  // or stochastic
};

// The bias that fits `amax` (times 2^margin) under the layout's max; amax 0 or not finite
// gives the layout's default bias.
int cfp8_bias_for_amax(float amax, Cfp8Layout layout, int margin);

class AmaxHistory {
 public:
  explicit AmaxHistory(int length = 16) : length_(length) {}
  void push(float amax);
  float max() const;
  bool empty() const { return h_.empty(); }
  const std::deque<float>& values() const { return h_; }

 private:
  int length_;
  std::deque<float> h_;
};

// Per-run cfp8 state: one amax history per (graph node, operand).
class PrecisionState {
 public:
  explicit PrecisionState(Cfp8Policy policy = {}) : policy_(policy) {}
  const Cfp8Policy& policy() const { return policy_; }
  // Records amax of `x` for `key` and returns the bias to encode it with.
  int observe(const std::pair<int, int>& key, const float* x, size_t n, Cfp8Layout layout);
  const std::map<std::pair<int, int>, AmaxHistory>& histories() const { return hist_; }
  std::map<std::pair<int, int>, AmaxHistory>& histories() { return hist_; }
  uint64_t sr_counter = 0;  // advances so stochastic rounding differs step to step

 private:
  Cfp8Policy policy_;
  std::map<std::pair<int, int>, AmaxHistory> hist_;
};

}  // namespace tessera
