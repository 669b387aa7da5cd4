#include <tessera/kernels/optimizer.h>

#include <tessera/core/error.h>
#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/gemm_driver.h>
#include <tessera/kernels/parallel_chunks.h>

#include <cmath>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const OptimizerFns* optimizer_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const OptimizerFns* optimizer_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<OptimizerFns>& pick() {
  static const Impl<OptimizerFns> kList[] = {
      {"avx512", Isa::avx512, optimizer_fns_avx512()},
      {"avx2", Isa::avx2, optimizer_fns_avx2()},
      {"scalar", Isa::scalar, optimizer_fns_scalar()},
  };
  return select("optimizer", kList);
}
}  // namespace

const OptimizerFns& optimizer_fns() { return *pick().fns; }
const char* optimizer_impl_name() { return pick().name; }

void sgd_step(float* w, const float* grad, float* momentum_buf, size_t n, const SgdOptions& opt,
              int64_t step) {
  // Negated comparisons so that NaN fails too.
  TESSERA_CHECK(opt.lr >= 0, "sgd: invalid learning rate ", opt.lr, " (must be >= 0)");
  TESSERA_CHECK(opt.momentum >= 0, "sgd: invalid momentum ", opt.momentum, " (must be >= 0)");
  TESSERA_CHECK(opt.weight_decay >= 0, "sgd: invalid weight_decay ", opt.weight_decay, " (must be >= 0)");
  TESSERA_CHECK(std::isfinite(opt.dampening), "sgd: invalid dampening ", opt.dampening);
  TESSERA_CHECK(!opt.nesterov || (opt.momentum > 0 && opt.dampening == 0),
                "sgd: nesterov momentum requires momentum > 0 and dampening == 0 (got momentum ",
                opt.momentum, ", dampening ", opt.dampening, ")");
  TESSERA_CHECK(step >= 1, "sgd: step ", step, " must be >= 1 (1 for the first update)");
  TESSERA_CHECK(opt.momentum == 0 || momentum_buf || n == 0,
                "sgd: momentum ", opt.momentum, " needs a momentum buffer, got null");
  SgdScalars s;
  s.lr = static_cast<float>(opt.lr);
  s.momentum = static_cast<float>(opt.momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - opt.dampening);
  s.weight_decay = static_cast<float>(opt.weight_decay);
  s.use_weight_decay = opt.weight_decay != 0;
  s.use_momentum = opt.momentum != 0;
  s.nesterov = opt.nesterov;
  s.first_step = step == 1;
  auto f = optimizer_fns().sgd;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) {
    const ScopedFlushDenormals ftz(true);  // see optimizer.h
    f(w + i, grad + i, momentum_buf ? momentum_buf + i : nullptr, j - i, s);
  });
}

void adamw_step(float* w, const float* grad, float* exp_avg, float* exp_avg_sq, size_t n,
                const AdamWOptions& opt, int64_t step) {
  TESSERA_CHECK(opt.lr >= 0, "adamw: invalid learning rate ", opt.lr, " (must be >= 0)");
  TESSERA_CHECK(opt.eps >= 0, "adamw: invalid epsilon ", opt.eps, " (must be >= 0)");
  TESSERA_CHECK(opt.beta1 >= 0 && opt.beta1 < 1, "adamw: invalid beta1 ", opt.beta1, " (must be in [0, 1))");
  TESSERA_CHECK(opt.beta2 >= 0 && opt.beta2 < 1, "adamw: invalid beta2 ", opt.beta2, " (must be in [0, 1))");
  TESSERA_CHECK(opt.weight_decay >= 0, "adamw: invalid weight_decay ", opt.weight_decay, " (must be >= 0)");
  TESSERA_CHECK(step >= 1, "adamw: step ", step, " must be >= 1 (1 for the first update)");
  const double t = static_cast<double>(step);
  AdamWScalars s;
  s.decay = static_cast<float>(1.0 - opt.lr * opt.weight_decay);
  s.one_minus_beta1 = static_cast<float>(1.0 - opt.beta1);
  s.beta2 = static_cast<float>(opt.beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - opt.beta2);
  s.step_size = static_cast<float>(opt.lr / (1.0 - std::pow(opt.beta1, t)));
  s.bc2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(opt.beta2, t)));
  s.eps = static_cast<float>(opt.eps);
  auto f = optimizer_fns().adamw;
  for_each_chunk(n, kChunkElems, [&](size_t i, size_t j) {
    const ScopedFlushDenormals ftz(true);  // see optimizer.h
    f(w + i, grad + i, exp_avg + i, exp_avg_sq + i, j - i, s);
  });
}

}  // namespace tessera::kernels
