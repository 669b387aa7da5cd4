#include <tessera/core/data.h>

#include <tessera/core/random.h>

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <numeric>

namespace tessera {

namespace {

// gzread can hand out data from a corrupted stream without any error: when the compressed input
// runs out exactly as the caller's buffer fills, the next read reports a plain end of file and
// the stream's CRC is never checked. So compare with the gzip trailer here, when its length
// field matches what was read (in a multi-member file the last trailer covers only the last
// member, whose length then differs unless the earlier members are empty).
void check_gzip_trailer(const std::string& path, uint32_t crc, int64_t produced) {
  std::FILE* raw = std::fopen(path.c_str(), "rb");
  if (!raw) TESSERA_THROW(IoError, path, ": cannot reopen (", std::strerror(errno), ")");
  uint8_t t[8];
  bool ok = std::fseek(raw, -8, SEEK_END) == 0 && std::fread(t, 1, 8, raw) == 8;
  std::fclose(raw);
  if (!ok) TESSERA_THROW(IoError, path, ": truncated: no room for the gzip trailer");
  auto le32 = [](const uint8_t* b) {
    return uint32_t{b[0]} | uint32_t{b[1]} << 8 | uint32_t{b[2]} << 16 | uint32_t{b[3]} << 24;
  };
  if (le32(t + 4) == static_cast<uint32_t>(produced) && le32(t) != crc) {
    TESSERA_THROW(IoError, path, ": corrupted compressed data (CRC-32 of the data is ", crc,
                  ", the gzip trailer says ", le32(t), ")");
  }
}

}  // namespace

IdxFile read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) TESSERA_THROW(IoError, path, ": cannot open (", std::strerror(errno), ")");
  struct Closer {
    gzFile f;
    ~Closer() { gzclose(f); }
  } closer{f};
  uLong crc = crc32(0L, Z_NULL, 0);  // of every byte read, for check_gzip_trailer
  int64_t produced = 0;
  auto read_exact = [&](void* dst, size_t n, const char* what) {
    size_t got = 0;
    auto* p = static_cast<char*>(dst);
    while (got < n) {
      unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - got, 1u << 30));
      int r = gzread(f, p + got, chunk);
      if (r < 0) {
        int err = 0;
        const char* msg = gzerror(f, &err);
        TESSERA_THROW(IoError, path, ": corrupted compressed data while reading ", what, " (", msg, ")");
      }
      if (r == 0) TESSERA_THROW(IoError, path, ": truncated: ", what, " needs ", n, " bytes, file ends after ", got);
      crc = crc32(crc, reinterpret_cast<const Bytef*>(p + got), static_cast<uInt>(r));
      got += static_cast<size_t>(r);
    }
    produced += static_cast<int64_t>(n);
  };
  uint8_t magic[4];
  read_exact(magic, 4, "the magic number");
  if (magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08) {
    TESSERA_THROW(IoError, path, ": not an unsigned-byte IDX file (magic ", int(magic[0]), " ", int(magic[1]), " ",
                  int(magic[2]), " ", int(magic[3]), ", expected 0 0 8 <ndim>)");
  }
  int ndim = magic[3];
  if (ndim < 1 || ndim > 4) TESSERA_THROW(IoError, path, ": IDX header says ", ndim, " dimensions (expected 1..4)");
  IdxFile out;
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    uint8_t b[4];
    read_exact(b, 4, "the dimension sizes");
    int64_t v = (int64_t{b[0]} << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    if (v <= 0 || v > (1 << 28)) TESSERA_THROW(IoError, path, ": dimension ", d, " has implausible size ", v);
    out.dims.push_back(v);
    total *= v;
    if (total > (int64_t{1} << 34)) TESSERA_THROW(IoError, path, ": header declares ", total, "+ bytes");
  }
  out.data.resize(static_cast<size_t>(total));
  read_exact(out.data.data(), out.data.size(), "the data");
  // Reading past the data also reaches the gzip trailer: a CRC or length mismatch (data that
  // decompressed but is corrupted) or a missing trailer shows up only here, so gzread's -1 and
  // Z_BUF_ERROR must not be taken for a clean end of file. A compressed stream that decodes to
  // more than the header declares is drained first: if it then fails its CRC, the problem is
  // corruption rather than extra data.
  char extra[4096];
  int r = gzread(f, extra, 1);
  const bool surplus = r > 0;
  if (surplus && !gzdirect(f)) {
    while ((r = gzread(f, extra, sizeof extra)) > 0) {
    }
  }
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  if (r < 0) TESSERA_THROW(IoError, path, ": corrupted compressed data (", msg, ")");
  if (err == Z_BUF_ERROR) TESSERA_THROW(IoError, path, ": truncated: the compressed stream ends early (", msg, ")");
  if (surplus) TESSERA_THROW(IoError, path, ": has bytes past the ", total, " the header declares");
  if (!gzdirect(f)) check_gzip_trailer(path, static_cast<uint32_t>(crc), produced);
  return out;
}

Dataset load_fashion_mnist(const std::string& dir, Split split) {
  std::string prefix = dir + "/" + (split == Split::train ? "train" : "t10k");
  std::string img_path = prefix + "-images-idx3-ubyte.gz", lbl_path = prefix + "-labels-idx1-ubyte.gz";
  IdxFile img = read_idx(img_path);
  IdxFile lbl = read_idx(lbl_path);
  if (img.dims.size() != 3) TESSERA_THROW(IoError, img_path, ": expected 3 dimensions (N, rows, cols), got ", img.dims.size());
  if (lbl.dims.size() != 1) TESSERA_THROW(IoError, lbl_path, ": expected 1 dimension, got ", lbl.dims.size());
  if (img.dims[0] != lbl.dims[0]) {
    TESSERA_THROW(IoError, img_path, " has ", img.dims[0], " images but ", lbl_path, " has ", lbl.dims[0], " labels");
  }
  int64_t n = img.dims[0], h = img.dims[1], w = img.dims[2];
  // Fashion-MNIST training-set statistics of pixel/255.
  constexpr float kMean = 0.2860f, kStd = 0.3530f;
  Dataset d;
  d.num_classes = 10;
  d.x = Tensor::empty({n, h, w, 1});
  d.y = Tensor::empty({n}, DType::i32);
  float* x = d.x.data<float>();
  for (size_t i = 0; i < img.data.size(); ++i) x[i] = (img.data[i] / 255.0f - kMean) / kStd;
  int32_t* y = d.y.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    if (lbl.data[i] > 9) TESSERA_THROW(IoError, lbl_path, ": label ", int(lbl.data[i]), " at index ", i, " is not 0..9");
    y[i] = lbl.data[i];
  }
  return d;
}

Dataset make_synthetic_classification(int64_t n, int64_t features, int64_t classes, uint64_t seed, double spread) {
  TESSERA_CHECK(n > 0 && features > 0 && classes > 1, "synthetic dataset: bad sizes n=", n, " features=", features,
                " classes=", classes);
  Tensor centres = Tensor::normal({classes, features}, 0, 1, seed);
  Dataset d;
  d.num_classes = classes;
  d.x = Tensor::empty({n, features});
  d.y = Tensor::empty({n}, DType::i32);
  float* x = d.x.data<float>();
  const float* c = centres.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    int32_t label = static_cast<int32_t>(random_bits(seed + 1, i) % classes);
    d.y.data<int32_t>()[i] = label;
    for (int64_t f = 0; f < features; ++f) {
      x[i * features + f] = c[label * features + f] + static_cast<float>(spread * random_normal(seed + 2, i * features + f));
    }
  }
  return d;
}

Dataset make_synthetic_sequences(int64_t n, int64_t seq, int64_t vocab, uint64_t seed) {
  TESSERA_CHECK(n > 0 && seq > 0 && vocab > 1, "synthetic sequences: bad sizes n=", n, " seq=", seq, " vocab=", vocab);
  Dataset d;
  d.num_classes = vocab;
  d.x = Tensor::empty({n, seq}, DType::i32);
  d.y = Tensor::empty({n, seq}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    int64_t period = 2 + static_cast<int64_t>(random_bits(seed, 3 * i) % 3);  // motif length 2..4
    int32_t motif[4];
    for (int k = 0; k < 4; ++k) motif[k] = static_cast<int32_t>(random_bits(seed + 1, 4 * i + k) % vocab);
    for (int64_t t = 0; t <= seq; ++t) {
      int32_t tok = motif[t % period];
      if (t < seq) d.x.data<int32_t>()[i * seq + t] = tok;
      if (t > 0) d.y.data<int32_t>()[i * seq + t - 1] = tok;
    }
  }
  return d;
}

// ---- DataLoader ----

DataLoader::DataLoader(const Dataset& data, int64_t batch_size, uint64_t seed, bool shuffle, bool drop_last,
                       int prefetch)
    : data_(data), batch_(batch_size), seed_(seed), shuffle_(shuffle), drop_last_(drop_last),
      prefetch_(std::max(prefetch, 1)) {
  TESSERA_CHECK(batch_size > 0, "DataLoader: batch size ", batch_size, " must be positive");
  TESSERA_CHECK(data.x.defined() && data.y.defined() && data.x.size(0) == data.y.size(0) && data.x.is_contiguous() &&
                    data.y.is_contiguous(),
                "DataLoader: dataset x and y must be contiguous with the same number of examples");
  TESSERA_CHECK(data.size() >= batch_size || !drop_last, "DataLoader: batch size ", batch_size,
                " exceeds the dataset size ", data.size());
  start_epoch(0, 0);
}

DataLoader::~DataLoader() { stop_worker(); }

int64_t DataLoader::batches_per_epoch() const {
  int64_t n = data_.size();
  return drop_last_ ? n / batch_ : (n + batch_ - 1) / batch_;
}

Batch DataLoader::make_batch(int64_t epoch, int64_t index) const {
  int64_t start = index * batch_;
  int64_t count = std::min(batch_, data_.size() - start);
  auto gather = [&](const Tensor& src) {
    std::vector<int64_t> dims = src.shape().dims();
    dims[0] = count;
    Tensor out = Tensor::empty(Shape(dims), src.dtype());
    size_t per = src.nbytes() / static_cast<size_t>(std::max<int64_t>(data_.size(), 1));
    const char* s = static_cast<const char*>(src.raw_data());
    char* d = static_cast<char*>(out.raw_data());
    for (int64_t i = 0; i < count; ++i) std::memcpy(d + i * per, s + order_[start + i] * per, per);
    return out;
  };
  Batch b;
  b.epoch = epoch;
  b.index = index;
  b.x = gather(data_.x);
  b.y = gather(data_.y);
  return b;
}

void DataLoader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop_worker();
  epoch_ = epoch;
  consumed_ = first_batch;
  order_.resize(data_.size());
  std::iota(order_.begin(), order_.end(), 0);
  if (shuffle_) {  // Fisher-Yates on the counter-based stream: the same order for (seed, epoch)
    uint64_t s = splitmix64(seed_ ^ splitmix64(static_cast<uint64_t>(epoch)));
    for (int64_t i = data_.size() - 1; i > 0; --i) {
      int64_t j = static_cast<int64_t>(random_bits(s, i) % static_cast<uint64_t>(i + 1));
      std::swap(order_[i], order_[j]);
    }
  }
  stop_ = false;
  done_ = false;
  queue_.clear();
  error_ = nullptr;
  worker_ = std::thread([this, epoch, first_batch] {
    try {
      for (int64_t b = first_batch; b < batches_per_epoch(); ++b) {
        Batch batch = make_batch(epoch, b);
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || static_cast<int>(queue_.size()) < prefetch_; });
        if (stop_) return;
        queue_.push_back(std::move(batch));
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    cv_.notify_all();
  });
}

void DataLoader::stop_worker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  worker_.join();
}

bool DataLoader::next(Batch& out) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !queue_.empty() || done_; });
  if (error_) std::rethrow_exception(error_);
  if (queue_.empty()) {
    lock.unlock();
    start_epoch(epoch_ + 1, 0);
    return false;
  }
  out = std::move(queue_.front());
  queue_.pop_front();
  ++consumed_;
  cv_.notify_all();
  return true;
}

void DataLoader::seek(int64_t epoch, int64_t batch) {
  TESSERA_CHECK(epoch >= 0 && batch >= 0 && batch <= batches_per_epoch(), "DataLoader::seek: position (epoch ",
                epoch, ", batch ", batch, ") is out of range (", batches_per_epoch(), " batches per epoch)");
  start_epoch(epoch, batch);
}

}  // namespace tessera
