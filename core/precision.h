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
//
// Cost: a tensor's amax is taken once per executor run however many ops read it (amax_of), and
// matmul operands are encoded with the predicted bias while their amax is measured, re-encoded
// only when the policy's bias turns out different (predict; core/ops_linalg.cc), so the values
// are always those of amax-then-encode.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/tensor.h>

#include <deque>
#include <map>
#include <set>
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
  // The max of the values that stay once the next push() evicts the oldest (all of them while
  // the history is not full).
  float max_kept_after_push() const;
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
  // The same with the amax already known (not finite: not recorded, as observe()).
  int observe_amax(const std::pair<int, int>& key, float amax, Cfp8Layout layout);
  // The bias observe_amax() will return for `key` if the coming amax is no larger than the
  // history's remaining values; -1 with no history. Lets a caller encode and measure amax in
  // one pass, then re-encode only if observe_amax() disagrees (the amax grew past the history).
  int predict(const std::pair<int, int>& key, Cfp8Layout layout) const;

  // amax per graph value for one executor run: a tensor that several ops read (a weight in the
  // forward and the data-gradient matmul, an activation in the forward and the weight gradient)
  // is scanned once. Executor::run calls begin_run(); a value is recognised by id, data and size.
  void begin_run() {
    run_amax_.clear();
    run_narrow_.clear();
  }
  bool known_amax(int value, const float* x, size_t n, float& amax) const;
  void remember_amax(int value, const float* x, size_t n, float amax);
  // amax of value `value` (`x`, n elements): remembered, or computed and remembered. A value
  // whose amax had to be computed here is marked wanted (for good: graphs repeat every step).
  float amax_of(int value, const float* x, size_t n);
  // Whether a cfp8 op has asked for this value's amax: its producer can then measure it while
  // it writes the value (maxpool2d) and remember_amax() it, saving amax_of() a pass.
  bool wants_amax(int value) const { return wanted_.count(value) != 0; }
  // Rounded copies of parameters for one run (nearest rounding only): a weight that the forward
  // and the data-gradient matmul both read is rounded once. Keyed by value id, checked against
  // the source buffer, size, narrow type and cfp8 bias (-1 for bf16).
  bool cached_narrow(int value, const float* x, size_t n, DType type, int bias, Tensor& out) const;
  void cache_narrow(int value, const float* x, size_t n, DType type, int bias, const Tensor& t);
  const std::map<std::pair<int, int>, AmaxHistory>& histories() const { return hist_; }
  std::map<std::pair<int, int>, AmaxHistory>& histories() { return hist_; }
  uint64_t sr_counter = 0;  // advances so stochastic rounding differs step to step

 private:
  Cfp8Policy policy_;
  std::map<std::pair<int, int>, AmaxHistory> hist_;
  struct Seen {
    const float* x;
    size_t n;
    float amax;
  };
  std::map<int, Seen> run_amax_;
  struct Narrow {
    const float* x;
    size_t n;
    DType type;
    int bias;
    Tensor t;
  };
  std::map<int, Narrow> run_narrow_;
  std::set<int> wanted_;
};

}  // namespace tessera
