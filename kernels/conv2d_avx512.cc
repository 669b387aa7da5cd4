// avx512 rung of the direct convolution (conv2d_direct.h): ROWS x (16 * NV) f32 register tiles,
// input elements broadcast straight from the padded, pre-rounded copy, weights or output
// gradients loaded as 16-channel vectors.
//
// Tile shapes by the number of 16-channel vectors of the column block: NV = 4 (64 channels) x 6
// rows, NV = 3 x 8, NV = 2 x 12, NV = 1 x 12: 24 accumulators where the width allows. Per
// reduction step: NV vector loads and ROWS broadcasts feed ROWS * NV FMAs. K = 32 and K = 64
// (the cnn's layers) thus run with no masked lanes; other K mask the last vector.
#include <tessera/kernels/conv2d_direct.h>
#include <tessera/kernels/gemm_ukernel_avx512.h>
#include <tessera/kernels/round_avx512.h>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

namespace tessera::kernels {
namespace {

constexpr int kMaxRows = 12;

constexpr int rows_for(int nv) { return nv == 4 ? 6 : nv == 3 ? 8 : 12; }

inline __mmask16 tail_mask(int ncols, int nv) {
  const int left = ncols - 16 * (nv - 1);
  return left >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << left) - 1);
}

// out = act(acc + bias) for the tile; bias and ReLU in registers (the general epilogue goes
// through memory, which costs a fifth of the time when the reduction is as short as the first
// layer's 9 taps), GELU through gemm_store_tile512.
template <int ROWS, int NV>
inline void store_fwd_tile(__m512 (&acc)[ROWS][NV], __mmask16 last, int ncols, const GemmTile& t) {
  if (t.act == GemmAct::gelu) {
    gemm_store_tile512<ROWS, NV>(acc, ncols, t);
    return;
  }
  __m512 bias[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    bias[v] = t.bias ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : __mmask16(0xffff), t.bias + 16 * v) : _mm512_setzero_ps();
  }
  const bool relu = t.act == GemmAct::relu;
  float* out = static_cast<float*>(t.out);
#pragma GCC unroll 14
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      __m512 x = _mm512_add_ps(acc[i][v], bias[v]);
      if (relu) x = _mm512_max_ps(_mm512_setzero_ps(), x);  // x second: NaN stays NaN
      if (v == NV - 1) {
        _mm512_mask_storeu_ps(out + i * t.ld_out + 16 * v, last, x);
      } else {
        _mm512_storeu_ps(out + i * t.ld_out + 16 * v, x);
      }
    }
  }
}

// ---- forward-shaped: rows = output pixels ------------------------------------------------------

// base[i]: offset in xp of output pixel i's window origin (tap (0, 0), channel 0).
template <int ROWS, int NV>
void fwd_tile(const DirectForward& f, const int64_t* base, int64_t k0, int ncols, const GemmTile& t) {
  const DirectInput& in = f.in;
  const int64_t C = in.C, K = f.K;
  const __mmask16 last = tail_mask(ncols, NV);
  __m512 acc[ROWS][NV];
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  for (int64_t r = 0; r < in.R; ++r) {
    for (int64_t s = 0; s < in.S; ++s) {
      const int64_t off = (r * in.dil_h * in.Wp + s * in.dil_w) * C;
      const float* wp = f.w + (r * in.S + s) * C * K + k0;
      const float* xr[ROWS];
#pragma GCC unroll 12
      for (int i = 0; i < ROWS; ++i) xr[i] = in.xp + base[i] + off;
      for (int64_t c = 0; c < C; ++c, wp += K) {
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, wp + 16 * v) : _mm512_loadu_ps(wp + 16 * v);
        }
#pragma GCC unroll 12
        for (int i = 0; i < ROWS; ++i) {
          const __m512 a = _mm512_set1_ps(xr[i][c]);
#pragma GCC unroll 4
          for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
        }
      }
    }
  }
  store_fwd_tile<ROWS, NV>(acc, last, ncols, t);
}

// One input channel, stride 1, the tile's pixels consecutive in one output row: row i of tap
// (r, s) reads x0[off + i], so one pointer serves every row and the broadcasts use constant
// displacements (the general tile keeps ROWS pointers, too many registers when the reduction
// per tap is a single channel). Up to 14 rows: 28 accumulators at NV = 2 (OW = 28 is 2 x 14).
template <int ROWS, int NV>
void fwd_tile_c1(const DirectForward& f, const int64_t* base, int64_t k0, int ncols, const GemmTile& t) {
  const DirectInput& in = f.in;
  const int64_t K = f.K;
  const __mmask16 last = tail_mask(ncols, NV);
  __m512 acc[ROWS][NV];
#pragma GCC unroll 14
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  }
  const float* x0 = in.xp + base[0];
  const float* wp = f.w + k0;
  for (int64_t r = 0; r < in.R; ++r) {
    for (int64_t s = 0; s < in.S; ++s, wp += K) {
      const float* xr = x0 + r * in.dil_h * in.Wp + s * in.dil_w;
      __m512 bv[NV];
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v) {
        bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, wp + 16 * v) : _mm512_loadu_ps(wp + 16 * v);
      }
#pragma GCC unroll 14
      for (int i = 0; i < ROWS; ++i) {
        const __m512 a = _mm512_set1_ps(xr[i]);
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
      }
    }
  }
  store_fwd_tile<ROWS, NV>(acc, last, ncols, t);
}

using FwdTileFn = void (*)(const DirectForward&, const int64_t*, int64_t, int, const GemmTile&);

constexpr int kMaxRowsC1 = 14;
template <int NV, int... R>
constexpr std::array<FwdTileFn, kMaxRowsC1> fwd_c1_row_table(std::integer_sequence<int, R...>) {
  return {{&fwd_tile_c1<R + 1, NV>...}};
}
// kFwdC1[nv - 1][rows - 1], nv = 1 or 2
const std::array<std::array<FwdTileFn, kMaxRowsC1>, 2> kFwdC1 = {
    fwd_c1_row_table<1>(std::make_integer_sequence<int, kMaxRowsC1>()),
    fwd_c1_row_table<2>(std::make_integer_sequence<int, kMaxRowsC1>()),
};

template <int NV, int... R>
constexpr std::array<FwdTileFn, kMaxRows> fwd_row_table(std::integer_sequence<int, R...>) {
  std::array<FwdTileFn, kMaxRows> a{};
  ((a[R] = R < rows_for(NV) ? &fwd_tile<(R < rows_for(NV) ? R + 1 : 1), NV> : nullptr), ...);
  return a;
}
// kFwd[nv - 1][rows - 1]
const std::array<std::array<FwdTileFn, kMaxRows>, 4> kFwd = {
    fwd_row_table<1>(std::make_integer_sequence<int, kMaxRows>()),
    fwd_row_table<2>(std::make_integer_sequence<int, kMaxRows>()),
    fwd_row_table<3>(std::make_integer_sequence<int, kMaxRows>()),
    fwd_row_table<4>(std::make_integer_sequence<int, kMaxRows>()),
};

void forward(const DirectForward& f) {
  const DirectInput& in = f.in;
  const int64_t P = in.OH * in.OW, M = in.images * P;
  if (M == 0) return;
  // Blocks of 192 pixels (a multiple of every tile height): 260 tasks on the cnn's first layer,
  // each long enough that task overhead stays small.
  constexpr int64_t kBlock = 192;
  tbb::parallel_for(int64_t{0}, (M + kBlock - 1) / kBlock, [&](int64_t blk) {
    const ScopedFlushDenormals ftz(in.flush_denormals);
    const tbb::blocked_range<int64_t> rg(blk * kBlock, std::min(M, (blk + 1) * kBlock));
    int64_t base[kBlock];
    int64_t n = rg.begin() / P, p = rg.begin() % P, oh = p / in.OW, ow = p % in.OW;
    for (int64_t i = 0; i < static_cast<int64_t>(rg.size()); ++i) {
      base[i] = ((n * in.Hp + oh * in.stride_h) * in.Wp + ow * in.stride_w) * in.C;
      if (++ow == in.OW) {
        ow = 0;
        if (++oh == in.OH) {
          oh = 0;
          ++n;
        }
      }
    }
    GemmTile t;
    t.act = f.act;
    t.ld_out = f.K;
    if (in.C == 1 && in.stride_w == 1 && f.K <= 32) {
      // Tiles along output rows, balanced: OW = 28 as 2 x 14.
      const int64_t per_row = (in.OW + kMaxRowsC1 - 1) / kMaxRowsC1;
      const int64_t rows_max = (in.OW + per_row - 1) / per_row;
      const int ncols = static_cast<int>(f.K), nv = (ncols + 15) / 16;
      t.bias = f.bias;
      for (int64_t m = rg.begin(); m < rg.end();) {
        const int64_t ow_m = m % in.OW;
        const int rows = static_cast<int>(std::min({rows_max, in.OW - ow_m, rg.end() - m}));
        t.out = f.y + m * f.K;
        kFwdC1[nv - 1][rows - 1](f, base + (m - rg.begin()), 0, ncols, t);
        m += rows;
      }
      return;
    }
    for (int64_t k0 = 0; k0 < f.K; k0 += 64) {
      const int ncols = static_cast<int>(std::min<int64_t>(64, f.K - k0));
      const int nv = (ncols + 15) / 16, mr = rows_for(nv);
      t.bias = f.bias ? f.bias + k0 : nullptr;
      for (int64_t m = rg.begin(); m < rg.end(); m += mr) {
        const int rows = static_cast<int>(std::min<int64_t>(mr, rg.end() - m));
        t.out = f.y + m * f.K + k0;
        kFwd[nv - 1][rows - 1](f, base + (m - rg.begin()), k0, ncols, t);
      }
    }
  });
}

// ---- weight gradient: rows = filter taps --------------------------------------------------------

// A run of consecutive output pixels in one output row.
struct Segment {
  int64_t xbase;     // offset in xp of the first pixel's window origin
  const float* dy;   // the first pixel's output-gradient row
  int64_t count;
};

enum Round { kNone, kBf16, kCfp8 };

template <int ROWS, int NV, int kRound>
void wg_tile(const DirectWeightGrad& g, const Cfp8Round512* rnd, const Segment* segs, size_t nsegs,
             const int64_t* offs, int64_t k0, int ncols, float* out) {
  const int64_t K = g.K, xs = g.in.stride_w * g.in.C;
  const __mmask16 last = tail_mask(ncols, NV);
  __m512 acc[ROWS][NV];
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[i][v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, out + i * K + 16 * v) : _mm512_loadu_ps(out + i * K + 16 * v);
    }
  }
  for (size_t q = 0; q < nsegs; ++q) {
    const Segment& sg = segs[q];
    const float* xr[ROWS];
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; ++i) xr[i] = g.in.xp + sg.xbase + offs[i];
    const float* d = sg.dy + k0;
    for (int64_t p = 0, xi = 0; p < sg.count; ++p, xi += xs, d += K) {
      __m512 bv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, d + 16 * v) : _mm512_loadu_ps(d + 16 * v);
        if constexpr (kRound == kBf16) bv[v] = round_bf16_ps(bv[v]);
        if constexpr (kRound == kCfp8) bv[v] = (*rnd)(bv[v]);
      }
#pragma GCC unroll 12
      for (int i = 0; i < ROWS; ++i) {
        const __m512 a = _mm512_set1_ps(xr[i][xi]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
      }
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1) {
        _mm512_mask_storeu_ps(out + i * K + 16 * v, last, acc[i][v]);
      } else {
        _mm512_storeu_ps(out + i * K + 16 * v, acc[i][v]);
      }
    }
  }
}

using WgTileFn = void (*)(const DirectWeightGrad&, const Cfp8Round512*, const Segment*, size_t, const int64_t*, int64_t,
                          int, float*);

template <int NV, int kRound, int... R>
constexpr std::array<WgTileFn, kMaxRows> wg_row_table(std::integer_sequence<int, R...>) {
  std::array<WgTileFn, kMaxRows> a{};
  ((a[R] = R < rows_for(NV) ? &wg_tile<(R < rows_for(NV) ? R + 1 : 1), NV, kRound> : nullptr), ...);
  return a;
}
// kWg[round][nv - 1][rows - 1]
template <int kRound>
constexpr std::array<std::array<WgTileFn, kMaxRows>, 4> wg_table() {
  return {wg_row_table<1, kRound>(std::make_integer_sequence<int, kMaxRows>()),
          wg_row_table<2, kRound>(std::make_integer_sequence<int, kMaxRows>()),
          wg_row_table<3, kRound>(std::make_integer_sequence<int, kMaxRows>()),
          wg_row_table<4, kRound>(std::make_integer_sequence<int, kMaxRows>())};
}
const std::array<std::array<std::array<WgTileFn, kMaxRows>, 4>, 3> kWg = {wg_table<kNone>(), wg_table<kBf16>(),
                                                                         wg_table<kCfp8>()};

// db[k] += sum of dy over the block's pixels, 64 columns at a time in registers.
void bias_sum(const std::vector<Segment>& segs, int64_t K, float* db) {
  for (int64_t k0 = 0; k0 < K; k0 += 64) {
    const int64_t n = std::min<int64_t>(64, K - k0);
    __mmask16 m[4];
    __m512 a[4];
    for (int v = 0; v < 4; ++v) {
      m[v] = static_cast<__mmask16>(n >= 16 * (v + 1) ? 0xffff : n <= 16 * v ? 0 : (1u << (n - 16 * v)) - 1);
      a[v] = _mm512_maskz_loadu_ps(m[v], db + k0 + 16 * v);
    }
    for (const Segment& sg : segs) {
      const float* d = sg.dy + k0;
      for (int64_t p = 0; p < sg.count; ++p, d += K) {
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) a[v] = _mm512_add_ps(a[v], _mm512_maskz_loadu_ps(m[v], d + 16 * v));
      }
    }
    for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(db + k0 + 16 * v, m[v], a[v]);
  }
}

void weight_grad(const DirectWeightGrad& g) {
  const DirectInput& in = g.in;
  const int64_t P = in.OH * in.OW, M = in.images * P, RSC = in.R * in.S * in.C;
  if (M == 0) return;
  std::vector<int64_t> offs(static_cast<size_t>(RSC));
  for (int64_t r = 0; r < in.R; ++r)
    for (int64_t s = 0; s < in.S; ++s)
      for (int64_t c = 0; c < in.C; ++c) offs[static_cast<size_t>((r * in.S + s) * in.C + c)] = (r * in.dil_h * in.Wp + s * in.dil_w) * in.C + c;
  // Pixel blocks of about 256: the block's output gradients (64 KB at K = 64) stay in L2 while
  // every row tile of the filter sweeps over them; the accumulators go to memory once a block.
  constexpr int64_t kBlock = 256;
  const Round round = g.round_dy == DType::bf16 ? kBf16 : is_cfp8(g.round_dy) ? kCfp8 : kNone;
  std::optional<Cfp8Round512> cfp8;
  if (round == kCfp8) cfp8.emplace(g.dy_fmt);
  const Cfp8Round512* rnd = cfp8 ? &*cfp8 : nullptr;
  tbb::parallel_for(0, g.parts, [&](int part) {
    const ScopedFlushDenormals ftz(in.flush_denormals);
    const int64_t p0 = M * part / g.parts, p1 = M * (part + 1) / g.parts;
    float* acc = g.acc[part];
    std::vector<Segment> segs;
    for (int64_t b0 = p0; b0 < p1; b0 += kBlock) {
      const int64_t b1 = std::min(p1, b0 + kBlock);
      segs.clear();
      for (int64_t m = b0; m < b1;) {
        const int64_t n = m / P, p = m % P, oh = p / in.OW, ow = p % in.OW;
        const int64_t count = std::min(in.OW - ow, b1 - m);
        segs.push_back({((n * in.Hp + oh * in.stride_h) * in.Wp + ow * in.stride_w) * in.C, g.dy + m * g.K, count});
        m += count;
      }
      for (int64_t k0 = 0; k0 < g.K; k0 += 64) {
        const int ncols = static_cast<int>(std::min<int64_t>(64, g.K - k0));
        const int nv = (ncols + 15) / 16, mr = rows_for(nv);
        for (int64_t j0 = 0; j0 < RSC; j0 += mr) {
          const int rows = static_cast<int>(std::min<int64_t>(mr, RSC - j0));
          kWg[round][nv - 1][rows - 1](g, rnd, segs.data(), segs.size(), offs.data() + j0, k0, ncols, acc + j0 * g.K + k0);
        }
      }
      if (g.dbias) bias_sum(segs, g.K, g.dbias[part]);
    }
  });
}

const Conv2dDirectFns kFns = {&forward, &weight_grad};

}  // namespace

const Conv2dDirectFns* conv2d_direct_avx512() { return &kFns; }

}  // namespace tessera::kernels
