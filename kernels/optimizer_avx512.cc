// AVX-512 optimizer updates, 16 lanes, masked tails. Same operation order as
// optimizer_scalar.cc, with FMA where the reference has a multiply followed by an add.
#include <tessera/kernels/optimizer.h>
#include <tessera/kernels/vec_math_avx512.h>

namespace tessera::kernels {
namespace {

using v512::kLanes;
using v512::tail_mask;

void sgd_512(float* w, const float* grad, float* buf, size_t n, const SgdScalars& s) {
  const __m512 lr = _mm512_set1_ps(s.lr), mom = _mm512_set1_ps(s.momentum);
  const __m512 damp = _mm512_set1_ps(s.one_minus_dampening), wdecay = _mm512_set1_ps(s.weight_decay);
  for (size_t i = 0; i < n; i += kLanes) {
    const __mmask16 k = tail_mask(n - i);
    __m512 wv = _mm512_maskz_loadu_ps(k, w + i);
    __m512 d = _mm512_maskz_loadu_ps(k, grad + i);
    if (s.use_weight_decay) d = _mm512_fmadd_ps(wdecay, wv, d);
    if (s.use_momentum) {
      __m512 b = s.first_step ? d : _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, buf + i), mom, _mm512_mul_ps(damp, d));
      _mm512_mask_storeu_ps(buf + i, k, b);
      d = s.nesterov ? _mm512_fmadd_ps(mom, b, d) : b;
    }
    _mm512_mask_storeu_ps(w + i, k, _mm512_fnmadd_ps(lr, d, wv));
  }
}

void adamw_512(float* w, const float* grad, float* m, float* v, size_t n, const AdamWScalars& s) {
  const __m512 decay = _mm512_set1_ps(s.decay), b1w = _mm512_set1_ps(s.one_minus_beta1);
  const __m512 b2 = _mm512_set1_ps(s.beta2), omb2 = _mm512_set1_ps(s.one_minus_beta2);
  const __m512 step = _mm512_set1_ps(s.step_size), bc2 = _mm512_set1_ps(s.bc2_sqrt);
  const __m512 eps = _mm512_set1_ps(s.eps);
  for (size_t i = 0; i < n; i += kLanes) {
    const __mmask16 k = tail_mask(n - i);
    __m512 g = _mm512_maskz_loadu_ps(k, grad + i);
    __m512 mv = _mm512_maskz_loadu_ps(k, m + i);
    __m512 vv = _mm512_maskz_loadu_ps(k, v + i);
    __m512 wd = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, w + i), decay);
    mv = _mm512_fmadd_ps(b1w, _mm512_sub_ps(g, mv), mv);
    vv = _mm512_fmadd_ps(_mm512_mul_ps(omb2, g), g, _mm512_mul_ps(vv, b2));
    _mm512_mask_storeu_ps(m + i, k, mv);
    _mm512_mask_storeu_ps(v + i, k, vv);
    // Masked-off lanes compute 0 / eps, harmless (eps may be 0: 0/0 lanes are never stored).
    __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vv), bc2), eps);
    _mm512_mask_storeu_ps(w + i, k, _mm512_fnmadd_ps(step, _mm512_div_ps(mv, denom), wd));
  }
}

const OptimizerFns k512 = {sgd_512, adamw_512};
}  // namespace

const OptimizerFns* optimizer_fns_avx512() { return &k512; }

}  // namespace tessera::kernels
