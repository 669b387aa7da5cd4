// Reduction drivers: split the work into fixed tasks, dispatch, combine partials in double.
#include <tessera/kernels/reduce.h>

#include <tessera/kernels/dispatch.h>
#include <tessera/kernels/parallel_chunks.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace tessera::kernels {

#if !defined(TESSERA_HAVE_AVX2)
const ReduceFns* reduce_fns_avx2() { return nullptr; }
#endif
#if !defined(TESSERA_HAVE_AVX512)
const ReduceFns* reduce_fns_avx512() { return nullptr; }
#endif

namespace {
const Impl<ReduceFns>& pick() {
  static const Impl<ReduceFns> kList[] = {
      {"avx512", Isa::avx512, reduce_fns_avx512()},
      {"avx2", Isa::avx2, reduce_fns_avx2()},
      {"scalar", Isa::scalar, reduce_fns_scalar()},
  };
  return select("reduce", kList);
}

// Columns of `inner` handled by one task of sum_axis.
constexpr size_t kTileCols = 1024;
// With fewer tasks than this, a long axis is also split, so that one big sum uses all cores.
constexpr size_t kFewTasks = 16;
constexpr size_t kMaxAxisPieces = 32;
// Elements per piece of a flat reduction (sum_squares, amax).
constexpr size_t kFlatPiece = 4 * kChunkElems;
}  // namespace

const ReduceFns& reduce_fns() { return *pick().fns; }
const char* reduce_impl_name() { return pick().name; }

void sum_axis(const float* x, float* y, size_t outer, size_t axis, size_t inner) {
  if (outer == 0 || inner == 0) return;
  if (axis == 0) {
    std::fill(y, y + outer * inner, 0.0f);
    return;
  }
  auto f = reduce_fns().sum_strided;
  const size_t tiles = (inner + kTileCols - 1) / kTileCols;
  const size_t tasks = outer * tiles;
  const size_t width = std::min(inner, kTileCols);  // widest task
  // Task t covers outer index t / tiles and columns [c0, c0 + w) of it.
  auto task_at = [&](size_t t, size_t* c0, size_t* w) {
    *c0 = (t % tiles) * kTileCols;
    *w = std::min(kTileCols, inner - *c0);
    return t / tiles;
  };

  const size_t piece_rows = std::max((axis + kMaxAxisPieces - 1) / kMaxAxisPieces,
                                     units_per_chunk(width) * 4);
  const size_t pieces = chunk_count(axis, piece_rows);
  if (tasks >= kFewTasks || pieces <= 1) {
    const size_t per = std::max<size_t>(1, units_per_chunk(axis * width));
    for_each_chunk(tasks, per, [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t) {
        size_t c0, w;
        size_t o = task_at(t, &c0, &w);
        f(x + o * axis * inner + c0, y + o * inner + c0, axis, w, inner);
      }
    });
    return;
  }
  // Few tasks over a long axis: every (task, piece) pair writes its own partial row.
  std::vector<float> partial(tasks * pieces * width);
  for_each_chunk(tasks * pieces, 1, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      size_t c0, w;
      size_t o = task_at(p / pieces, &c0, &w);
      size_t a0 = (p % pieces) * piece_rows;
      size_t rows = std::min(piece_rows, axis - a0);
      f(x + (o * axis + a0) * inner + c0, &partial[p * width], rows, w, inner);
    }
  });
  for (size_t t = 0; t < tasks; ++t) {
    size_t c0, w;
    size_t o = task_at(t, &c0, &w);
    for (size_t i = 0; i < w; ++i) {
      double s = 0;
      for (size_t k = 0; k < pieces; ++k) s += partial[(t * pieces + k) * width + i];
      y[o * inner + c0 + i] = static_cast<float>(s);
    }
  }
}

float sum(const float* x, size_t n) {
  float y = 0.0f;
  sum_axis(x, &y, 1, n, 1);
  return y;
}

float sum_squares(const float* x, size_t n) {
  auto f = reduce_fns().sum_squares;
  std::vector<float> partial(chunk_count(n, kFlatPiece));
  for_each_indexed_chunk(n, kFlatPiece, [&](size_t c, size_t i, size_t j) { partial[c] = f(x + i, j - i); });
  double s = 0;
  for (float p : partial) s += p;
  return static_cast<float>(s);
}

float amax(const float* x, size_t n) {
  auto f = reduce_fns().amax;
  std::vector<float> partial(chunk_count(n, kFlatPiece));
  for_each_indexed_chunk(n, kFlatPiece, [&](size_t c, size_t i, size_t j) { partial[c] = f(x + i, j - i); });
  float m = 0.0f;
  for (float p : partial) {
    if (std::isnan(p)) return p;
    m = std::max(m, p);
  }
  return m;
}

}  // namespace tessera::kernels
