// The AVX-512 micro-kernel, shared by the avx512 (f32 FMA) and avx512_bf16 (vdpbf16ps) rungs,
// which differ only in the multiply-add of one k step (the `Op` parameter). Include only from
// sources compiled with AVX-512 flags; everything here has internal linkage so that each
// rung's copy keeps its own flags.
//
// Register tile: ROWS x NV zmm accumulators (ROWS <= MR rows, NV <= NR / 16 vectors of 16
// columns). Per k step: NV aligned loads of the B micro-panel, one 32-bit broadcast of A per
// row (an f32, or a bf16 pair), ROWS * NV multiply-adds. Edge tiles use a smaller instance
// (fewer rows, fewer vectors) and masks on the last vector, so they do no wasted work beyond
// the last 16-column vector.
#pragma once

#include <tessera/kernels/gemm_driver.h>

#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

namespace tessera::kernels {
namespace {

inline uint32_t gemm_load_word(const char* p) {
  uint32_t w;
  std::memcpy(&w, p, 4);
  return w;
}

// erf(x), rational approximation x P(x^2) / Q(x^2) on [-4, 4] (the XLA / Eigen f32 erf):
// |error| < 4e-7 over all floats (checked in gemm_test). Beyond |x| = 3.9, erf is +-1 in f32.
inline __m512 gemm_erf512(__m512 x) {
  const __m512 ax = _mm512_abs_ps(x);
  const __m512 c = _mm512_min_ps(ax, _mm512_set1_ps(4.f));
  const __m512 x2 = _mm512_mul_ps(c, c);
  __m512 p = _mm512_fmadd_ps(x2, _mm512_set1_ps(-2.72614225801306e-10f), _mm512_set1_ps(2.77068142495902e-08f));
  p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.10102402082508e-06f));
  p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-5.69250639462346e-05f));
  p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-7.34990630326855e-04f));
  p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-2.95459980854025e-03f));
  p = _mm512_fmadd_ps(x2, p, _mm512_set1_ps(-1.60960333262415e-02f));
  p = _mm512_mul_ps(c, p);
  __m512 q = _mm512_fmadd_ps(x2, _mm512_set1_ps(-1.45660718464996e-05f), _mm512_set1_ps(-2.13374055278905e-04f));
  q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.68282697438203e-03f));
  q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-7.37332916720468e-03f));
  q = _mm512_fmadd_ps(x2, q, _mm512_set1_ps(-1.42647390514189e-02f));
  __m512 r = _mm512_div_ps(p, q);
  r = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(3.9f), _CMP_GE_OQ), r,
                           _mm512_set1_ps(1.f));
  // Odd function: put the sign of x back (NaN stays NaN through the 0.5 x factor of gelu).
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(INT32_MIN));
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
}

inline __m512 gemm_gelu512(__m512 x) {
  const __m512 e = gemm_erf512(_mm512_mul_ps(x, _mm512_set1_ps(0.70710678118654752f)));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.f), e));
}

// f32 -> bf16 bits in the low half of each lane, rounding exactly like core/bf16.h.
inline __m512i gemm_bf16_rne512(__m512 f) {
  const __m512i u = _mm512_castps_si512(f);
  const __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
  const __m512i hi = _mm512_srli_epi32(u, 16);
  const __m512i lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
  const __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  return _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
}

// The general GemmTile contract on a tile spilled to memory (ld 16 * nv floats): bias,
// activations, bf16 prior or output. Out of line and not unrolled: it runs once per tile and
// only on the last K block, and keeping it small keeps the 24 kernel instances small.
__attribute__((noinline)) inline void gemm_epilogue512(const float* tile, int rows, int nv, int n,
                                                       const GemmTile& t) {
  const __m512 alpha = _mm512_set1_ps(t.alpha);
  const __m512 scale = _mm512_set1_ps(t.prior_scale);
  for (int r = 0; r < rows; ++r) {
    for (int v = 0; v < nv; ++v) {
      const int left = n - 16 * v;
      const __mmask16 mask = left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
      __m512 x = _mm512_mul_ps(alpha, _mm512_load_ps(tile + (r * nv + v) * 16));
      if (t.prior) {
        __m512 p;
        if (t.prior_bf16) {
          const uint16_t* src = static_cast<const uint16_t*>(t.prior) + r * t.ld_prior + 16 * v;
          p = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src)), 16));
        } else {
          p = _mm512_maskz_loadu_ps(mask, static_cast<const float*>(t.prior) + r * t.ld_prior + 16 * v);
        }
        x = _mm512_fmadd_ps(scale, p, x);
      }
      if (t.bias) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, t.bias + 16 * v));
      if (t.act == GemmAct::relu) {
        x = _mm512_max_ps(_mm512_setzero_ps(), x);  // x second: NaN stays NaN
      } else if (t.act == GemmAct::gelu) {
        x = gemm_gelu512(x);
      }
      if (t.out_bf16) {
        uint16_t* dst = static_cast<uint16_t*>(t.out) + r * t.ld_out + 16 * v;
        _mm512_mask_cvtepi32_storeu_epi16(dst, mask, gemm_bf16_rne512(x));
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(t.out) + r * t.ld_out + 16 * v, mask, x);
      }
    }
  }
}

// The GemmTile contract on a register tile: out = act(alpha P + prior_scale prior + bias).
// Every K block but the last is f32 in, f32 out, no bias, no activation: that case stays in
// registers; the rest goes through gemm_epilogue512.
template <int ROWS, int NV>
inline void gemm_store_tile512(__m512 (&acc)[ROWS][NV], int n, const GemmTile& t) {
  if (t.bias || t.act != GemmAct::none || t.out_bf16 || (t.prior && t.prior_bf16)) {
    alignas(64) float tile[ROWS * NV * 16];
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm512_store_ps(tile + (r * NV + v) * 16, acc[r][v]);
    }
    gemm_epilogue512(tile, ROWS, NV, n, t);
    return;
  }
  const int tail = n - 16 * (NV - 1);  // 1..16 real lanes in the last vector
  const __mmask16 last = tail >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << tail) - 1);
  float* out = static_cast<float*>(t.out);
  const float* prior = static_cast<const float*>(t.prior);
  const __m512 alpha = _mm512_set1_ps(t.alpha);
  const __m512 scale = _mm512_set1_ps(t.prior_scale);
  const bool unit_alpha = t.alpha == 1.f;
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 mask = v == NV - 1 ? last : __mmask16(0xffff);
      __m512 x = unit_alpha ? acc[r][v] : _mm512_mul_ps(alpha, acc[r][v]);
      if (prior) x = _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(mask, prior + r * t.ld_prior + 16 * v), x);
      _mm512_mask_storeu_ps(out + r * t.ld_out + 16 * v, mask, x);
    }
  }
}

template <class Op, int MR, int NR, int ROWS, int NV>
void gemm_ukernel512(int64_t ksteps, const void* a_, const void* b_, int /*m*/, int n,
                     const GemmTile& t) {
  const char* a = static_cast<const char*>(a_);
  const char* b = static_cast<const char*>(b_);
  // The C tile (or the prior it adds) is usually far away (L3 or memory); fetch it while the
  // k loop runs.
  {
    const char* c = static_cast<const char*>(t.prior ? t.prior : t.out);
    const int64_t ld = (t.prior ? t.ld_prior : t.ld_out) * ((t.prior ? t.prior_bf16 : t.out_bf16) ? 2 : 4);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm_prefetch(c + r * ld + 64 * v, _MM_HINT_T0);
    }
  }
  __m512 acc[ROWS][NV];
#pragma GCC unroll 16
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t s = 0; s < ksteps; ++s) {
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_load_si512(b + 64 * v);
#pragma GCC unroll 16
    for (int r = 0; r < ROWS; ++r) {
      const __m512i aw = _mm512_set1_epi32(static_cast<int>(gemm_load_word(a + 4 * r)));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = Op::madd(acc[r][v], aw, bv[v]);
    }
    a += 4 * MR;
    b += 4 * NR;
  }
  gemm_store_tile512<ROWS, NV>(acc, n, t);
}

// kFns[rows - 1][vectors - 1]: one instance per edge-tile shape.
template <class Op, int MR, int NR>
struct GemmUkernelTable512 {
  static constexpr int kNV = NR / 16;
  using Row = std::array<GemmUkernelFn, kNV>;
  template <int ROWS, int... V>
  static constexpr Row row(std::integer_sequence<int, V...>) {
    return {{&gemm_ukernel512<Op, MR, NR, ROWS, V + 1>...}};
  }
  template <int... R>
  static constexpr std::array<Row, MR> all(std::integer_sequence<int, R...>) {
    return {{row<R + 1>(std::make_integer_sequence<int, kNV>())...}};
  }
  static void run(int64_t ksteps, const void* a, const void* b, int m, int n, const GemmTile& t) {
    static constexpr std::array<Row, MR> kFns = all(std::make_integer_sequence<int, MR>());
    kFns[m - 1][(n + 15) / 16 - 1](ksteps, a, b, m, n, t);
  }
};

}  // namespace
}  // namespace tessera::kernels
