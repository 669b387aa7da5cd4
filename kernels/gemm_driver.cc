// The portable blocked driver (BLIS's five loops around the micro-kernel):
//
//   per task (a rectangle of C)      threads: a tm x tn grid of rectangles, no barriers
//     jc: NC columns of C            B block kc x nc packed once, read from L2/L3
//       pc: KC of the reduction      (one empty block when K == 0)
//         ic: MC rows of C           A block mc x kc packed, stays in L2
//           jr: NR columns           B micro-panel stays in L1
//             ir: MR rows            micro-kernel on an MR x NR tile
//
// Threads split C into rectangles instead of sharing packed blocks: each task packs its own
// panels, so there is no barrier per K block (which would cost more than the duplicated
// packing on 2-8 cores), and the split is chosen to keep the duplication small. With M as small
// as 64 the split goes along N so every thread gets work.
#include <tessera/kernels/gemm_driver.h>
#include <tessera/kernels/cpu.h>

#include <tessera/core/bf16.h>
#include <tessera/core/error.h>

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>
#include <oneapi/tbb/task_arena.h>

#include <xmmintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <type_traits>

namespace tessera::kernels {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// The block size <= `block` (a multiple of `unit`) that splits `extent` into equal blocks,
// rounded up to `unit`.
int64_t balanced_block(int64_t extent, int64_t block, int64_t unit) {
  if (extent <= block) return block;
  return std::min(block, round_up(ceil_div(extent, ceil_div(extent, block)), unit));
}

// ---- cfp8 decode tables -----------------------------------------------------------------------

struct Cfp8Tables {
  // [layout][bias][code]
  std::array<std::array<std::array<uint16_t, 256>, kCfp8MaxBias + 1>, 2> bf16;
  Cfp8Tables() {
    for (int l = 0; l < 2; ++l) {
      for (int b = 0; b <= kCfp8MaxBias; ++b) {
        Cfp8Format f{static_cast<Cfp8Layout>(l), b};
        for (int c = 0; c < 256; ++c) {
          // Exact: every cfp8 value is a bf16 value, so the low f32 bits are zero.
          bf16[l][b][c] = static_cast<uint16_t>(f32_bits(cfp8_decode(static_cast<uint8_t>(c), f)) >> 16);
        }
      }
    }
  }
};

// ---- generic packing ---------------------------------------------------------------------------

// The portable packers: one instance per (source type, output type), so the inner loop is a
// plain load-convert-store the compiler can vectorize when the source is x-contiguous.
template <int KPACK, typename Out, typename Src, typename Decode>
void pack_generic(const Src* src, int64_t sx, int64_t sk, int64_t x0, int64_t nx, int64_t k0,
                  int64_t kc, int w, Out* dst, Decode decode) {
  const int64_t ksteps = ceil_div(kc, KPACK);
  const int64_t panels = ceil_div(nx, w);
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t rows = std::min<int64_t>(w, nx - p * w);
    for (int64_t s = 0; s < ksteps; ++s) {
      Out* d = dst + (p * ksteps + s) * w * KPACK;
      for (int t = 0; t < KPACK; ++t) {
        const int64_t k = s * KPACK + t;
        if (k >= kc) {
          for (int r = 0; r < w; ++r) d[r * KPACK + t] = Out{0};
          continue;
        }
        const Src* row = src + (x0 + p * w) * sx + (k0 + k) * sk;
        if (sx == 1) {  // x-contiguous: a unit-stride loop the compiler vectorizes
          for (int64_t r = 0; r < rows; ++r) d[r * KPACK + t] = decode(row[r]);
        } else {
          for (int64_t r = 0; r < rows; ++r) d[r * KPACK + t] = decode(row[r * sx]);
        }
        for (int64_t r = rows; r < w; ++r) d[r * KPACK + t] = Out{0};
      }
    }
  }
}

template <int KPACK, typename Out>
void pack_generic_any(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0, int64_t kc,
                      int w, Out* dst) {
  constexpr bool kF32 = std::is_same_v<Out, float>;
  switch (op.type) {
    case DType::f32:
      pack_generic<KPACK>(static_cast<const float*>(op.data), op.sx, op.sk, x0, nx, k0, kc, w, dst,
                          [](float f) -> Out {
                            if constexpr (kF32) {
                              return f;
                            } else {
                              return f32_to_bf16(f);  // no rung packs f32 into bf16 panels
                            }
                          });
      return;
    case DType::bf16:
      pack_generic<KPACK>(static_cast<const uint16_t*>(op.data), op.sx, op.sk, x0, nx, k0, kc, w,
                          dst, [](uint16_t h) -> Out {
                            if constexpr (kF32) {
                              return bf16_to_f32(h);
                            } else {
                              return h;
                            }
                          });
      return;
    default: {
      const uint16_t* table = gemm_cfp8_bf16_table(op.fmt);
      pack_generic<KPACK>(static_cast<const uint8_t*>(op.data), op.sx, op.sk, x0, nx, k0, kc, w,
                          dst, [table](uint8_t c) -> Out {
                            if constexpr (kF32) {
                              return bf16_to_f32(table[c]);
                            } else {
                              return table[c];
                            }
                          });
      return;
    }
  }
}

// ---- tuning and scratch ------------------------------------------------------------------------

std::mutex& tuning_mutex() {
  static std::mutex mu;
  return mu;
}
GemmTuning& tuning_storage() {
  static GemmTuning t;
  return t;
}

// Grow-only, 64-byte aligned, per thread: packing buffers are reused across calls so that a
// small GEMM does not pay for page faults of a fresh allocation every time.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { std::free(p_); }
  void* get(size_t bytes) {
    if (bytes > size_) {
      std::free(p_);
      size_ = round_up(static_cast<int64_t>(std::max<size_t>(bytes, 4096)), 4096);
      p_ = std::aligned_alloc(64, size_);
      if (!p_) {
        size_ = 0;
        TESSERA_THROW(OutOfMemoryError, "gemm: cannot allocate ", bytes, " bytes of packing buffer");
      }
    }
    return p_;
  }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

struct Scratch {
  Buffer a, b, w;
  bool busy = false;
};
thread_local Scratch tls_scratch;

// Everything a task needs, fixed for the whole call.
struct Problem {
  const GemmDesc& d;
  const GemmKernel& k;
  GemmOperand a, b;
  void* C;
  int64_t ldc;
  int64_t mc, kc, nc;
};

// One rectangle of C: rows [m0, m1), columns [n0, n1).
void run_rect(const Problem& pb, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const GemmDesc& d = pb.d;
  const ScopedFlushDenormals flush(d.a_type != DType::f32);
  const GemmKernel& k = pb.k;
  const int MR = k.mr, NR = k.nr, KP = k.kpack;
  const size_t esize = KP == 1 ? sizeof(float) : sizeof(uint16_t);
  const int64_t K = d.K;
  const bool out_bf16 = d.c_type == DType::bf16;
  const bool multi_k = K > pb.kc;
  const bool has_bias = d.epilogue == Epilogue::bias || d.epilogue == Epilogue::bias_relu ||
                        d.epilogue == Epilogue::bias_gelu;
  const GemmAct act = (d.epilogue == Epilogue::relu || d.epilogue == Epilogue::bias_relu)
                          ? GemmAct::relu
                          : (d.epilogue == Epilogue::gelu || d.epilogue == Epilogue::bias_gelu)
                                ? GemmAct::gelu
                                : GemmAct::none;

  // bf16 output summed over several K blocks: partial sums live in an f32 workspace so that
  // only the final value is rounded. Its width bounds nc.
  int64_t nc = pb.nc;
  const bool need_ws = out_bf16 && multi_k;
  if (need_ws) {
    constexpr int64_t kWsFloats = int64_t{1} << 21;  // 8 MB
    nc = std::min(nc, std::max<int64_t>(NR, kWsFloats / std::max<int64_t>(1, m1 - m0) / NR * NR));
  }
  // Equal blocks: N = 1100 as 2 x 550 rather than 1024 + 76 (a short block pays the full
  // per-block cost for little work).
  nc = balanced_block(n1 - n0, nc, NR);
  const int64_t mc = balanced_block(m1 - m0, pb.mc, MR);
  const int64_t kc_max = std::min(pb.kc, std::max<int64_t>(K, 1));
  const int64_t ksteps_max = ceil_div(kc_max, KP);

  Scratch* s = &tls_scratch;
  std::unique_ptr<Scratch> own;
  if (s->busy) {  // re-entered on this thread (a nested TBB steal): use private buffers
    own = std::make_unique<Scratch>();
    s = own.get();
  }
  struct Busy {
    Scratch* s;
    explicit Busy(Scratch* x) : s(x) { s->busy = true; }
    ~Busy() { s->busy = false; }
  } busy(s);

  const int64_t nc_cap = std::min(nc, n1 - n0), mc_cap = std::min(mc, m1 - m0);
  char* bp = static_cast<char*>(s->b.get(round_up(nc_cap, NR) * ksteps_max * KP * esize));
  char* ap = static_cast<char*>(s->a.get(round_up(mc_cap, MR) * ksteps_max * KP * esize));
  float* ws = need_ws ? static_cast<float*>(s->w.get((m1 - m0) * nc_cap * sizeof(float))) : nullptr;
  const int64_t ldw = nc_cap;

  char* Cbytes = static_cast<char*>(pb.C);
  const size_t csize = out_bf16 ? 2 : 4;

  for (int64_t jc = n0; jc < n1; jc += nc) {
    const int64_t ncur = std::min(nc, n1 - jc);
    for (int64_t pc = 0; pc == 0 || pc < K; pc += pb.kc) {
      const int64_t kcur = std::min(pb.kc, K - pc);
      const int64_t ksteps = ceil_div(kcur, KP);
      const bool first = pc == 0, last = pc + kcur >= K;
      k.pack(pb.b, jc, ncur, pc, kcur, NR, bp);

      GemmTile t;
      t.alpha = d.alpha;
      t.bias = nullptr;
      t.act = last ? act : GemmAct::none;
      for (int64_t ic = m0; ic < m1; ic += mc) {
        const int64_t mcur = std::min(mc, m1 - ic);
        k.pack(pb.a, ic, mcur, pc, kcur, MR, ap);
        for (int64_t jr = 0; jr < ncur; jr += NR) {
          const int n = static_cast<int>(std::min<int64_t>(NR, ncur - jr));
          const int64_t j = jc + jr;
          const char* bpanel = bp + (jr / NR) * NR * ksteps * KP * esize;
          t.bias = (last && has_bias) ? d.bias + j : nullptr;
          for (int64_t ir = 0; ir < mcur; ir += MR) {
            const int m = static_cast<int>(std::min<int64_t>(MR, mcur - ir));
            const int64_t i = ic + ir;
            const char* apanel = ap + (ir / MR) * MR * ksteps * KP * esize;
            void* c_tile = Cbytes + (i * pb.ldc + j) * csize;
            void* w_tile = need_ws ? ws + (i - m0) * ldw + (j - jc) : nullptr;
            // Which prior to add and where to write, per K block (README "micro-kernel").
            if (first) {
              t.prior = d.beta != 0.f ? c_tile : nullptr;
              t.prior_scale = d.beta;
              t.ld_prior = pb.ldc;
              t.prior_bf16 = out_bf16;
            } else {
              t.prior = need_ws ? w_tile : c_tile;
              t.prior_scale = 1.f;
              t.ld_prior = need_ws ? ldw : pb.ldc;
              t.prior_bf16 = false;
            }
            if (need_ws && !last) {
              t.out = w_tile;
              t.ld_out = ldw;
              t.out_bf16 = false;
            } else {
              t.out = c_tile;
              t.ld_out = pb.ldc;
              t.out_bf16 = out_bf16;
            }
            k.ukernel(ksteps, apanel, bpanel, m, n, t);
          }
        }
      }
      if (K == 0) break;
    }
  }
}

// A tm x tn grid of rectangles for `tasks` tasks, minimizing the busiest task's estimated cost:
// its multiply-adds, what it packs (A once per NC block, B once) and the broadcasts of its
// micro-tile columns, in multiply-add units.
struct Grid {
  int tm = 1, tn = 1;
};
Grid choose_grid(const GemmDesc& d, const GemmKernel& k, int64_t nc, int tasks) {
  const int64_t tiles_m = ceil_div(d.M, k.mr), tiles_n = ceil_div(d.N, k.lanes);
  const double K = static_cast<double>(std::max<int64_t>(d.K, 1));
  // One packed element ~ this many multiply-adds; and each micro-tile column (NR wide or less)
  // costs MR broadcasts per k step, about one vector FMA (16 multiply-adds) per row, so a split
  // that leaves narrow column tiles costs more than its multiply-adds. Both measured on the
  // M = 64..512 shapes where the two grids of 2 tasks differ: the rows split won by 2-20%.
  constexpr double kPackCost = 8, kTileCost = 16;
  Grid best;
  double best_cost = -1;
  for (int tm = 1; tm <= tasks; ++tm) {
    if (tasks % tm) continue;
    const int tn = tasks / tm;
    if (tm > tiles_m || tn > tiles_n) continue;
    const double rows = static_cast<double>(ceil_div(tiles_m, tm) * k.mr);
    const double cols = static_cast<double>(ceil_div(tiles_n, tn) * k.lanes);
    const double col_tiles = static_cast<double>(ceil_div(static_cast<int64_t>(cols), k.nr));
    const double cost = rows * cols * K +
                        kPackCost * (rows * K * static_cast<double>(ceil_div(static_cast<int64_t>(cols), nc)) + cols * K) +
                        kTileCost * rows * K * col_tiles;
    if (best_cost < 0 || cost < best_cost) {
      best_cost = cost;
      best = {tm, tn};
    }
  }
  return best;
}

}  // namespace

const uint16_t* gemm_cfp8_bf16_table(Cfp8Format f) {
  static const Cfp8Tables tables;
  return tables.bf16[static_cast<int>(f.layout)][f.bias].data();
}

void gemm_pack_generic_f32(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0, int64_t kc,
                           int w, void* dst) {
  pack_generic_any<1>(op, x0, nx, k0, kc, w, static_cast<float*>(dst));
}
void gemm_pack_generic_bf16(const GemmOperand& op, int64_t x0, int64_t nx, int64_t k0,
                            int64_t kc, int w, void* dst) {
  pack_generic_any<2>(op, x0, nx, k0, kc, w, static_cast<uint16_t*>(dst));
}

Cfp8Format gemm_cfp8_format(DType t, int bias) {
  Cfp8Format f;
  f.layout = t == DType::cfp8_e5m2 ? Cfp8Layout::e5m2 : Cfp8Layout::e4m3;
  f.bias = bias < 0 ? cfp8_default_bias(f.layout) : bias;
  return f;
}

GemmOperand gemm_operand_a(const GemmDesc& d, const void* A) {
  GemmOperand op;
  op.data = A;
  op.type = d.a_type;
  if (is_cfp8(d.a_type)) op.fmt = gemm_cfp8_format(d.a_type, d.a_bias);
  const int64_t lda = d.lda ? d.lda : (d.trans_a ? d.M : d.K);
  op.sx = d.trans_a ? 1 : lda;  // op(A)(i, k) = A[i][k] or A[k][i]
  op.sk = d.trans_a ? lda : 1;
  return op;
}

GemmOperand gemm_operand_b(const GemmDesc& d, const void* B) {
  GemmOperand op;
  op.data = B;
  op.type = d.b_type;
  if (is_cfp8(d.b_type)) op.fmt = gemm_cfp8_format(d.b_type, d.b_bias);
  const int64_t ldb = d.ldb ? d.ldb : (d.trans_b ? d.K : d.N);
  op.sx = d.trans_b ? ldb : 1;  // op(B)(k, j) = B[k][j] or B[j][k]
  op.sk = d.trans_b ? 1 : ldb;
  return op;
}

namespace {
// GemmTuning::cfp8_vbmi, read on every cfp8 packing call: an atomic, not the mutex.
std::atomic<bool> g_cfp8_vbmi_allowed{true};
}  // namespace

void gemm_set_tuning(const GemmTuning& t) {
  std::lock_guard<std::mutex> lock(tuning_mutex());
  tuning_storage() = t;
  g_cfp8_vbmi_allowed.store(t.cfp8_vbmi != 0, std::memory_order_relaxed);
}

bool gemm_cfp8_vbmi() {
#if defined(TESSERA_HAVE_CFP8_VBMI)
  static const bool cpu = cpu_features().os_avx512 && cpu_features().avx512_vbmi;
  return cpu && g_cfp8_vbmi_allowed.load(std::memory_order_relaxed);
#else
  return false;
#endif
}
GemmTuning gemm_tuning() {
  std::lock_guard<std::mutex> lock(tuning_mutex());
  return tuning_storage();
}

void gemm_blocked(const GemmDesc& d, const void* A, const void* B, void* C, const GemmKernel& k) {
  if (d.M == 0 || d.N == 0) return;
  const GemmTuning tune = gemm_tuning();
  int64_t mc = tune.mc > 0 ? tune.mc : k.blocking.mc;
  int64_t kc = tune.kc > 0 ? tune.kc : k.blocking.kc;
  int64_t nc = tune.nc > 0 ? tune.nc : k.blocking.nc;
  mc = std::max<int64_t>(k.mr, mc / k.mr * k.mr);
  kc = std::max<int64_t>(k.kpack, kc / k.kpack * k.kpack);
  kc = balanced_block(d.K, kc, k.kpack);  // K = 784: 4 x 196, not 3 x 256 + 16
  nc = std::max<int64_t>(k.nr, nc / k.nr * k.nr);
  Problem pb{d, k, gemm_operand_a(d, A), gemm_operand_b(d, B), C, d.ldc ? d.ldc : d.N, mc, kc, nc};

  // Threads only pay off above a few microseconds of work.
  const double flops = 2.0 * static_cast<double>(d.M) * static_cast<double>(d.N) *
                       static_cast<double>(std::max<int64_t>(d.K, 1));
  const double min_flops = tune.min_parallel_flops >= 0 ? static_cast<double>(tune.min_parallel_flops) : 4e6;
  int tasks = tune.threads > 0 ? tune.threads : tbb::this_task_arena::max_concurrency();
  if (flops < min_flops) tasks = 1;
  Grid g;
  for (; tasks > 1; --tasks) {  // largest task count that gives every task at least one tile
    g = choose_grid(d, k, nc, tasks);
    if (g.tm * g.tn == tasks) break;
  }
  if (tasks <= 1) {
    run_rect(pb, 0, d.M, 0, d.N);
    return;
  }
  // Rows split at MR, columns at one vector: N = 512 with NR = 48 splits 256 / 256, not 288 / 224.
  const int64_t tiles_m = ceil_div(d.M, k.mr), tiles_n = ceil_div(d.N, k.lanes);
  tbb::parallel_for(
      tbb::blocked_range<int>(0, tasks, 1),
      [&](const tbb::blocked_range<int>& r) {
        for (int t = r.begin(); t < r.end(); ++t) {
          const int a = t / g.tn, b = t % g.tn;
          const int64_t m0 = std::min(d.M, tiles_m * a / g.tm * k.mr);
          const int64_t m1 = std::min(d.M, tiles_m * (a + 1) / g.tm * k.mr);
          const int64_t n0 = std::min(d.N, tiles_n * b / g.tn * k.lanes);
          const int64_t n1 = std::min(d.N, tiles_n * (b + 1) / g.tn * k.lanes);
          if (m0 < m1 && n0 < n1) run_rect(pb, m0, m1, n0, n1);
        }
      },
      tbb::simple_partitioner());
}

}  // namespace tessera::kernels
