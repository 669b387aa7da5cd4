// AVX2 optimizer updates, 8 lanes; the twin of optimizer_avx512.cc with vmaskmov tails.
#include <tessera/kernels/optimizer.h>
#include <tessera/kernels/vec_math_avx2.h>

namespace tessera::kernels {
namespace {

using v256::kLanes;
using v256::load_tail;
using v256::store_tail;

void sgd_256(float* w, const float* grad, float* buf, size_t n, const SgdScalars& s) {
  const __m256 lr = _mm256_set1_ps(s.lr), mom = _mm256_set1_ps(s.momentum);
  const __m256 damp = _mm256_set1_ps(s.one_minus_dampening), wdecay = _mm256_set1_ps(s.weight_decay);
  for (size_t i = 0; i < n; i += kLanes) {
    const size_t r = n - i;
    __m256 wv = load_tail(w + i, r);
    __m256 d = load_tail(grad + i, r);
    if (s.use_weight_decay) d = _mm256_fmadd_ps(wdecay, wv, d);
    if (s.use_momentum) {
      __m256 b = s.first_step ? d : _mm256_fmadd_ps(load_tail(buf + i, r), mom, _mm256_mul_ps(damp, d));
      store_tail(buf + i, r, b);
      d = s.nesterov ? _mm256_fmadd_ps(mom, b, d) : b;
    }
    store_tail(w + i, r, _mm256_fnmadd_ps(lr, d, wv));
  }
}

void adamw_256(float* w, const float* grad, float* m, float* v, size_t n, const AdamWScalars& s) {
  const __m256 decay = _mm256_set1_ps(s.decay), b1w = _mm256_set1_ps(s.one_minus_beta1);
  const __m256 b2 = _mm256_set1_ps(s.beta2), omb2 = _mm256_set1_ps(s.one_minus_beta2);
  const __m256 step = _mm256_set1_ps(s.step_size), bc2 = _mm256_set1_ps(s.bc2_sqrt);
  const __m256 eps = _mm256_set1_ps(s.eps);
  for (size_t i = 0; i < n; i += kLanes) {
    const size_t r = n - i;
    __m256 g = load_tail(grad + i, r);
    __m256 mv = load_tail(m + i, r);
    __m256 vv = load_tail(v + i, r);
    __m256 wd = _mm256_mul_ps(load_tail(w + i, r), decay);
    mv = _mm256_fmadd_ps(b1w, _mm256_sub_ps(g, mv), mv);
    vv = _mm256_fmadd_ps(_mm256_mul_ps(omb2, g), g, _mm256_mul_ps(vv, b2));
    store_tail(m + i, r, mv);
    store_tail(v + i, r, vv);
    __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vv), bc2), eps);
    store_tail(w + i, r, _mm256_fnmadd_ps(step, _mm256_div_ps(mv, denom), wd));
  }
}

const OptimizerFns k256 = {sgd_256, adamw_256};
}  // namespace

const OptimizerFns* optimizer_fns_avx2() { return &k256; }

}  // namespace tessera::kernels
