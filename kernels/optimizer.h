// Optimizer updates on f32 master weights, in place, with the formulas of torch.optim.SGD and
// torch.optim.AdamW (single-tensor implementation, maximize=False, amsgrad=False).
//
//   kernels::SgdOptions sgd;
//   sgd.lr = 0.1, sgd.momentum = 0.9, sgd.weight_decay = 1e-4;
//   kernels::sgd_step(w, grad, momentum_buf, n, sgd, step);        // step = 1, 2, ...
//   kernels::adamw_step(w, grad, exp_avg, exp_avg_sq, n, kernels::AdamWOptions{}, step);
//
// SGD, per element, with d = grad + weight_decay * w (the L2 term only when weight_decay != 0):
//   momentum == 0:  w -= lr * d                                 (momentum_buf unused, may be null)
//   otherwise:      buf = d at step 1, else momentum * buf + (1 - dampening) * d
//                   w -= lr * (nesterov ? d + momentum * buf : buf)
// AdamW, per element, at step t >= 1 (the count after this update, as torch's state["step"]):
//   w *= 1 - lr * weight_decay                                  (decoupled weight decay)
//   m = m + (1 - beta1) * (g - m)                               (torch's lerp)
//   v = beta2 * v + (1 - beta2) * g * g
//   w -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// m and v start as zeros (the caller allocates them). Scalars such as lr / (1 - beta1^t) are
// computed in double and rounded to f32 once, as PyTorch does with Python floats.
//
// Hyper-parameters are checked as torch checks them (ValueError naming the value): lr, eps,
// momentum, weight_decay >= 0; 0 <= beta1, beta2 < 1; nesterov needs momentum > 0 and
// dampening == 0; step >= 1; a momentum buffer is required when momentum != 0.
// Denormals: the update runs with FTZ/DAZ (denormal inputs read as zero, denormal results
// flush to zero), as the bf16 / cfp8 GEMMs do. A momentum or Adam buffer whose gradient has been
// zero for a while decays geometrically through the denormal range for hundreds of steps, and
// every denormal operand costs a microcode assist on Intel CPUs: on this project's machine the
// SGD update grew from 1% to 4% (bf16) and 8% (cfp8, whose gradients underflow to zero more
// often) of a cnn training step by the second epoch. A denormal (< 1.2e-38) has no effect on a
// weight of any normal magnitude (w - lr * 1e-38 == w), so this only changes denormal state.
// Buffers are [n] f32, must not overlap each other (grad may not alias w), and are split over
// oneTBB workers in chunks of kChunkElems. The vector rungs use FMA, so they may differ from the
// scalar rung in the last bit per step.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels {

struct SgdOptions {
  double lr = 1e-3;
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

void sgd_step(float* w, const float* grad, float* momentum_buf, size_t n, const SgdOptions& opt,
              int64_t step);
void adamw_step(float* w, const float* grad, float* exp_avg, float* exp_avg_sq, size_t n,
                const AdamWOptions& opt, int64_t step);

// The per-step f32 scalars the rungs use (derived from the options and the step by the driver).
struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool use_weight_decay, use_momentum, nesterov, first_step;
};
struct AdamWScalars {
  float decay;            // 1 - lr * weight_decay
  float one_minus_beta1;  // lerp weight
  float beta2, one_minus_beta2;
  float step_size;        // lr / (1 - beta1^t)
  float bc2_sqrt;         // sqrt(1 - beta2^t)
  float eps;
};

// One rung's single-threaded implementations; the public functions validate, chunk and dispatch.
struct OptimizerFns {
  void (*sgd)(float* w, const float* grad, float* buf, size_t n, const SgdScalars& s);
  void (*adamw)(float* w, const float* grad, float* m, float* v, size_t n, const AdamWScalars& s);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const OptimizerFns* optimizer_fns_scalar();
const OptimizerFns* optimizer_fns_avx2();
const OptimizerFns* optimizer_fns_avx512();
const OptimizerFns& optimizer_fns();
const char* optimizer_impl_name();

}  // namespace tessera::kernels
