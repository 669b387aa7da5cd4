// Row-wise softmax over the last dimension, its gradient, and the fused softmax cross-entropy
// loss of a classifier, on row-major f32 [rows x cols] buffers (row stride = cols).
//
//   kernels::softmax(x, y, rows, cols);
//   float loss = kernels::softmax_cross_entropy(logits, labels, probs, batch, classes);
//   kernels::softmax_cross_entropy_backward(probs, labels, /*dloss=*/1.0f, dlogits, batch, classes);
//
// Numerics: every row is shifted by its maximum before exp, so no finite input overflows; the
// loss of a row is log(sum_j exp(x_j - max)) - (x_label - max), never log of a rounded
// probability, so it stays accurate when p[label] underflows. Row sums accumulate in f32 in
// blocks (error ~ (16 + cols/1024) ulp). A row containing NaN or +inf gives NaN in that row
// (as PyTorch); a row of all -inf gives NaN. Probabilities below 2^-126 may flush to 0 on the
// AVX2 rung.
//
// Threading: rows are split over oneTBB workers in chunks of >= kChunkElems elements; the loss
// is summed in double from one partial per fixed chunk, so it is the same bits on every run.
// Pointers may be null only when rows * cols == 0.
#pragma once

#include <tessera/kernels/cpu.h>

#include <cstddef>
#include <cstdint>

namespace tessera::kernels {

// y[r, :] = exp(x[r, :] - max) / sum(exp(x[r, :] - max)). In place allowed (y == x).
void softmax(const float* x, float* y, size_t rows, size_t cols);
// Gradient through y = softmax(x): dx[r, :] = y[r, :] * (dy[r, :] - <dy[r, :], y[r, :]>).
// In place allowed (dx == dy or dx == y).
void softmax_backward(const float* y, const float* dy, float* dx, size_t rows, size_t cols);

// Mean over rows of -log softmax(logits[r, :])[labels[r]], PyTorch's cross_entropy with
// reduction="mean" and no ignore_index or label smoothing. Writes the softmax of every row to
// probs (probs == logits allowed), which is what the backward needs. Labels are checked before
// anything is computed: a label outside [0, classes) throws ValueError naming the label and its
// row. classes == 0 with rows > 0 is a ValueError. rows == 0 returns NaN (a mean over nothing,
// as PyTorch).
float softmax_cross_entropy(const float* logits, const int32_t* labels, float* probs, size_t rows,
                            size_t classes);
// dlogits[r, c] = (probs[r, c] - (c == labels[r])) * dloss / rows, the gradient of the mean loss
// scaled by the upstream gradient dloss. In place allowed (dlogits == probs). Labels are checked
// as in the forward.
void softmax_cross_entropy_backward(const float* probs, const int32_t* labels, float dloss,
                                    float* dlogits, size_t rows, size_t classes);

// One rung's single-threaded implementations (labels already checked); the public functions
// above validate, chunk and dispatch.
struct SoftmaxFns {
  void (*softmax)(const float* x, float* y, size_t rows, size_t cols);
  void (*softmax_backward)(const float* y, const float* dy, float* dx, size_t rows, size_t cols);
  // Writes probs and returns the sum over the rows of their losses.
  double (*xent_forward)(const float* logits, const int32_t* labels, float* probs, size_t rows,
                         size_t cols);
  // dlogits = (probs - onehot(labels)) * scale.
  void (*xent_backward)(const float* probs, const int32_t* labels, float scale, float* dlogits,
                        size_t rows, size_t cols);
};

// Per-rung tables, for tests and benchmarks; nullptr where the rung was not compiled in.
const SoftmaxFns* softmax_fns_scalar();
const SoftmaxFns* softmax_fns_avx2();
const SoftmaxFns* softmax_fns_avx512();
const SoftmaxFns& softmax_fns();
const char* softmax_impl_name();

}  // namespace tessera::kernels
