// Datasets and loaders.
//
//   Dataset train = load_fashion_mnist("/usr/share/datasets/fashion-mnist", Split::train);
//   DataLoader loader(train, /*batch=*/64, /*seed=*/1, /*shuffle=*/true);
//   Batch b;
//   while (loader.next(b)) { ... b.x [64, 28, 28, 1] f32, b.y [64] i32 ... }
//
// IDX files (optionally gzip-compressed, as Debian's dataset-fashion-mnist ships them) are read
// with full validation: a missing, truncated or corrupted file raises IoError naming the file
// and what was wrong. Images are scaled to [0, 1] and standardized with the dataset's mean and
// standard deviation; layout NHWC.
#pragma once

#include <tessera/core/tensor.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tessera {

// Raw IDX content: dims and bytes (unsigned 8-bit data only, as MNIST-style files use).
struct IdxFile {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;
};
IdxFile read_idx(const std::string& path);  // IoError with the path and the problem

struct Dataset {
  Tensor x;  // [N, ...] f32 (images, features) or i32 (token ids)
  Tensor y;  // [N] or [N, ...] i32 labels (per example, or per token)
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
  int64_t num_classes = 0;
};

enum class Split { train, test };
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";
Dataset load_fashion_mnist(const std::string& dir, Split split);
// Token sequences for language-model tests: x [n, seq] i32, y [n, seq] = x shifted by one
// (next-token targets). Each sequence repeats a short random motif, so it is learnable.
Dataset make_synthetic_sequences(int64_t n, int64_t seq, int64_t vocab, uint64_t seed);
// Gaussian blobs: `classes` centres in `features` dimensions, N examples; seeded.
Dataset make_synthetic_classification(int64_t n, int64_t features, int64_t classes, uint64_t seed,
                                      double spread = 0.5);

struct Batch {
  Tensor x, y;
  int64_t epoch = 0, index = 0;  // batch index within the epoch
};

// Seeded shuffling per epoch, fixed-size batches (the last partial batch of an epoch is dropped
// when drop_last, else returned smaller), prefetch of `prefetch` batches on a background thread.
// The position (epoch, batch) can be saved and restored for bit-exact resume.
class DataLoader {
 public:
  DataLoader(const Dataset& data, int64_t batch_size, uint64_t seed, bool shuffle = true,
             bool drop_last = true, int prefetch = 2);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // Next batch of the current epoch; false at the end of the epoch (then starts the next).
  bool next(Batch& out);
  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  int64_t position() const { return consumed_; }  // batches handed out in this epoch
  // Continue from (epoch, batches already consumed in it).
  void seek(int64_t epoch, int64_t batch);

 private:
  void start_epoch(int64_t epoch, int64_t first_batch);
  void stop_worker();
  Batch make_batch(int64_t epoch, int64_t index) const;

  const Dataset& data_;
  int64_t batch_;
  uint64_t seed_;
  bool shuffle_, drop_last_;
  int prefetch_;
  std::vector<int64_t> order_;
  int64_t epoch_ = 0, consumed_ = 0;

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false, done_ = false;
  std::exception_ptr error_;
};

}  // namespace tessera
