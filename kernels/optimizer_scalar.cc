// The reference rung, always built, the oracle in tests: torch.optim's per-element formulas,
// one f32 operation at a time in the order torch applies them.
#include <tessera/kernels/optimizer.h>

#include <cmath>

namespace tessera::kernels {
namespace {

void sgd_ref(float* w, const float* grad, float* buf, size_t n, const SgdScalars& s) {
  for (size_t i = 0; i < n; ++i) {
    float d = grad[i];
    if (s.use_weight_decay) d = d + s.weight_decay * w[i];
    if (s.use_momentum) {
      float b = s.first_step ? d : buf[i] * s.momentum + s.one_minus_dampening * d;
      buf[i] = b;
      d = s.nesterov ? d + s.momentum * b : b;
    }
    w[i] = w[i] - s.lr * d;
  }
}

void adamw_ref(float* w, const float* grad, float* m, float* v, size_t n, const AdamWScalars& s) {
  for (size_t i = 0; i < n; ++i) {
    const float g = grad[i];
    const float wd = w[i] * s.decay;
    const float mi = m[i] + s.one_minus_beta1 * (g - m[i]);
    const float vi = v[i] * s.beta2 + s.one_minus_beta2 * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / s.bc2_sqrt + s.eps;
    w[i] = wd - s.step_size * (mi / denom);
  }
}

const OptimizerFns kScalar = {sgd_ref, adamw_ref};
}  // namespace

const OptimizerFns* optimizer_fns_scalar() { return &kScalar; }

}  // namespace tessera::kernels
