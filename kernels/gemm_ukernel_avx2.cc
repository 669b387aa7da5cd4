// avx2 rung: 8-wide f32 FMA micro-kernel, 6 x 16 tile (12 ymm accumulators + 2 B vectors + 1
// broadcast of the 16 registers). Operands of every type are packed to f32 by the portable
// packer (bf16 and cfp8 widen exactly).
#include <tessera/kernels/gemm_driver.h>

#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

namespace tessera::kernels {
namespace {

constexpr int kMR = 6, kNR = 16, kNV = kNR / 8;

// erf as in gemm_ukernel_avx512.h (same coefficients, |error| < 4e-7).
inline __m256 erf256(__m256 x) {
  const __m256 ax = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256 c = _mm256_min_ps(ax, _mm256_set1_ps(4.f));
  const __m256 x2 = _mm256_mul_ps(c, c);
  __m256 p = _mm256_fmadd_ps(x2, _mm256_set1_ps(-2.72614225801306e-10f), _mm256_set1_ps(2.77068142495902e-08f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.10102402082508e-06f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-5.69250639462346e-05f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-7.34990630326855e-04f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-2.95459980854025e-03f));
  p = _mm256_fmadd_ps(x2, p, _mm256_set1_ps(-1.60960333262415e-02f));
  p = _mm256_mul_ps(c, p);
  __m256 q = _mm256_fmadd_ps(x2, _mm256_set1_ps(-1.45660718464996e-05f), _mm256_set1_ps(-2.13374055278905e-04f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.68282697438203e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-7.37332916720468e-03f));
  q = _mm256_fmadd_ps(x2, q, _mm256_set1_ps(-1.42647390514189e-02f));
  __m256 r = _mm256_div_ps(p, q);
  r = _mm256_blendv_ps(r, _mm256_set1_ps(1.f), _mm256_cmp_ps(ax, _mm256_set1_ps(3.9f), _CMP_GE_OQ));
  const __m256 sign = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN)));
  return _mm256_or_ps(r, sign);
}

inline __m256 gelu256(__m256 x) {
  const __m256 e = erf256(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x), _mm256_add_ps(_mm256_set1_ps(1.f), e));
}

// bf16 bits (rounded as core/bf16.h) of 8 floats, packed to 8 uint16.
inline __m128i bf16_rne256(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));  // abs < 2^31
  const __m256i hi = _mm256_srli_epi32(u, 16);
  const __m256i lsb = _mm256_and_si256(hi, _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
  r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
  const __m256i packed = _mm256_packus_epi32(r, r);  // lanes: r0..3 r0..3 | r4..7 r4..7
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
}

inline __m256 load_bf16x8(const uint16_t* p, int cnt) {
  __m128i h;
  if (cnt == 8) {
    h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  } else {
    alignas(16) uint16_t tmp[8] = {};
    std::memcpy(tmp, p, cnt * sizeof(uint16_t));
    h = _mm_load_si128(reinterpret_cast<const __m128i*>(tmp));
  }
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

inline void store_bf16x8(uint16_t* p, int cnt, __m256 x) {
  const __m128i h = bf16_rne256(x);
  if (cnt == 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
  } else {
    alignas(16) uint16_t tmp[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), h);
    std::memcpy(p, tmp, cnt * sizeof(uint16_t));
  }
}

template <int ROWS, int NV>
inline void store_tile(__m256 (&acc)[ROWS][NV], int n, const GemmTile& t) {
  const int tail = n - 8 * (NV - 1);  // 1..8
  const __m256i last = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  __m256i mask[NV];
  int cnt[NV];
  for (int v = 0; v < NV; ++v) {
    mask[v] = v == NV - 1 ? last : _mm256_set1_epi32(-1);
    cnt[v] = v == NV - 1 ? tail : 8;
  }
  const __m256 alpha = _mm256_set1_ps(t.alpha), scale = _mm256_set1_ps(t.prior_scale);
  __m256 bias[NV];
  for (int v = 0; v < NV; ++v) {
    bias[v] = t.bias ? _mm256_maskload_ps(t.bias + 8 * v, mask[v]) : _mm256_setzero_ps();
  }
#pragma GCC unroll 8
  for (int r = 0; r < ROWS; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) {
      __m256 x = _mm256_mul_ps(alpha, acc[r][v]);
      if (t.prior) {
        const __m256 p =
            t.prior_bf16
                ? load_bf16x8(static_cast<const uint16_t*>(t.prior) + r * t.ld_prior + 8 * v, cnt[v])
                : _mm256_maskload_ps(static_cast<const float*>(t.prior) + r * t.ld_prior + 8 * v, mask[v]);
        x = _mm256_fmadd_ps(scale, p, x);
      }
      if (t.bias) x = _mm256_add_ps(x, bias[v]);
      if (t.act == GemmAct::relu) {
        x = _mm256_max_ps(_mm256_setzero_ps(), x);  // x second: NaN stays NaN
      } else if (t.act == GemmAct::gelu) {
        x = gelu256(x);
      }
      if (t.out_bf16) {
        store_bf16x8(static_cast<uint16_t*>(t.out) + r * t.ld_out + 8 * v, cnt[v], x);
      } else {
        _mm256_maskstore_ps(static_cast<float*>(t.out) + r * t.ld_out + 8 * v, mask[v], x);
      }
    }
  }
}

template <int ROWS, int NV>
void ukernel(int64_t ksteps, const void* a_, const void* b_, int /*m*/, int n, const GemmTile& t) {
  const float* a = static_cast<const float*>(a_);
  const float* b = static_cast<const float*>(b_);
  __m256 acc[ROWS][NV];
  for (int r = 0; r < ROWS; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t s = 0; s < ksteps; ++s) {
    __m256 bv[NV];
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < ROWS; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
    a += kMR;
    b += kNR;
  }
  store_tile<ROWS, NV>(acc, n, t);
}

using Row = std::array<GemmUkernelFn, kNV>;
template <int ROWS, int... V>
constexpr Row row(std::integer_sequence<int, V...>) {
  return {{&ukernel<ROWS, V + 1>...}};
}
template <int... R>
constexpr std::array<Row, kMR> all(std::integer_sequence<int, R...>) {
  return {{row<R + 1>(std::make_integer_sequence<int, kNV>())...}};
}
constexpr std::array<Row, kMR> kFns = all(std::make_integer_sequence<int, kMR>());

void run(int64_t ksteps, const void* a, const void* b, int m, int n, const GemmTile& t) {
  kFns[m - 1][(n + 7) / 8 - 1](ksteps, a, b, m, n, t);
}

const GemmKernel kKernel = {"avx2", kMR, kNR, 1, {384, 256, 3072}, &run, &gemm_pack_generic_f32, 8};

}  // namespace

const GemmKernel* gemm_kernel_avx2() { return &kKernel; }

}  // namespace tessera::kernels
