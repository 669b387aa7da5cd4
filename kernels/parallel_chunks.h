// Fixed-size chunking over oneTBB for the memory-bound kernels (elementwise, softmax, layer
// norm, reductions, optimizers).
//
//   for_each_chunk(rows, rows_per_chunk(cols), [&](size_t r0, size_t r1) { ... });
//
// Chunk boundaries depend only on the problem size, never on the thread count or on how TBB
// schedules them, so reductions that combine one partial per chunk in chunk order give the same
// bits on every run and every machine. Inputs of at most one chunk run inline on the caller's
// thread (no TBB task is spawned). `fn` must not throw: validate before entering.
#pragma once

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>

#include <algorithm>
#include <cstddef>

namespace tessera::kernels {

// Elements per chunk: below this, spawning a task costs more than the work.
inline constexpr size_t kChunkElems = size_t{1} << 14;

// Units (elements, rows, ...) per chunk when each unit touches `unit_elems` elements.
inline size_t units_per_chunk(size_t unit_elems) {
  return std::max<size_t>(1, kChunkElems / std::max<size_t>(1, unit_elems));
}

inline size_t chunk_count(size_t n_units, size_t per_chunk) {
  return n_units == 0 ? 0 : (n_units + per_chunk - 1) / per_chunk;
}

// Calls fn(begin, end) for the chunks [c*per, min(n, (c+1)*per)), in parallel when there are two
// or more.
template <typename F>
void for_each_chunk(size_t n_units, size_t per_chunk, F&& fn) {
  const size_t chunks = chunk_count(n_units, per_chunk);
  if (chunks == 0) return;
  if (chunks == 1) {
    fn(size_t{0}, n_units);
    return;
  }
  tbb::parallel_for(
      tbb::blocked_range<size_t>(0, chunks, 1),
      [&](const tbb::blocked_range<size_t>& r) {
        for (size_t c = r.begin(); c != r.end(); ++c) {
          fn(c * per_chunk, std::min(n_units, (c + 1) * per_chunk));
        }
      },
      tbb::simple_partitioner());
}

// Calls fn(chunk_index, begin, end); for reductions that keep one partial per chunk.
template <typename F>
void for_each_indexed_chunk(size_t n_units, size_t per_chunk, F&& fn) {
  for_each_chunk(chunk_count(n_units, per_chunk), 1, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; ++c) fn(c, c * per_chunk, std::min(n_units, (c + 1) * per_chunk));
  });
}

}  // namespace tessera::kernels
