#include <tessera/core/data.h>

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace tessera {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "tessera_data_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* d = mkdtemp(buf.data());
    if (!d) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path_ = d;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::vector<uint8_t> idx_bytes(const std::vector<int64_t>& dims, const std::vector<uint8_t>& data,
                               uint8_t type = 0x08) {
  std::vector<uint8_t> b = {0, 0, type, static_cast<uint8_t>(dims.size())};
  for (int64_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  }
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void write_plain(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb9");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), static_cast<int>(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// Pixels with structure (so deflate uses Huffman blocks) and some noise.
std::vector<uint8_t> pixels(int64_t n, uint32_t salt = 0) {
  std::vector<uint8_t> p(static_cast<size_t>(n));
  uint32_t s = 12345 + salt;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 1103515245u + 12345u;
    p[i] = static_cast<uint8_t>((i % 28) * 9 + ((s >> 16) & 7));
  }
  return p;
}

uint64_t splitmix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Runs f, expects an IoError and returns its message.
std::string io_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const IoError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected IoError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected IoError, nothing was thrown";
  return "";
}

#define EXPECT_MSG_HAS(msg, part) \
  EXPECT_NE((msg).find(part), std::string::npos) << "message '" << (msg) << "' lacks '" << (part) << "'"

TEST(ReadIdx, PlainAndGzip) {
  TempDir dir;
  std::vector<uint8_t> data = pixels(3 * 4 * 5);
  for (bool gz : {false, true}) {
    std::string path = dir.file(gz ? "a.idx.gz" : "a.idx");
    if (gz) {
      write_gz(path, idx_bytes({3, 4, 5}, data));
    } else {
      write_plain(path, idx_bytes({3, 4, 5}, data));
    }
    IdxFile f = read_idx(path);
    EXPECT_EQ(f.dims, (std::vector<int64_t>{3, 4, 5})) << path;
    EXPECT_EQ(f.data, data) << path;
  }
  // 1-d (labels) and large dimension values exercising every header byte.
  std::vector<uint8_t> labels = {0, 9, 3, 255};
  write_plain(dir.file("l.idx"), idx_bytes({4}, labels));
  IdxFile l = read_idx(dir.file("l.idx"));
  EXPECT_EQ(l.dims, (std::vector<int64_t>{4}));
  EXPECT_EQ(l.data, labels);
  std::vector<uint8_t> wide = pixels(0x010203);
  write_gz(dir.file("w.gz"), idx_bytes({1, 0x010203}, wide));
  IdxFile w = read_idx(dir.file("w.gz"));
  EXPECT_EQ(w.dims, (std::vector<int64_t>{1, 0x010203}));
  EXPECT_EQ(w.data, wide);
}

TEST(ReadIdx, MissingFile) {
  TempDir dir;
  std::string path = dir.file("nope-idx3-ubyte.gz");
  std::string msg = io_error([&] { read_idx(path); });
  EXPECT_MSG_HAS(msg, path);
  EXPECT_MSG_HAS(msg, "cannot open");
}

TEST(ReadIdx, TruncatedData) {
  TempDir dir;
  std::vector<uint8_t> full = idx_bytes({2, 28, 28}, pixels(2 * 28 * 28));
  std::vector<uint8_t> cut(full.begin(), full.end() - 100);
  for (bool gz : {false, true}) {
    std::string path = dir.file(gz ? "t.gz" : "t.idx");
    if (gz) {
      write_gz(path, cut);
    } else {
      write_plain(path, cut);
    }
    std::string msg = io_error([&] { read_idx(path); });
    EXPECT_MSG_HAS(msg, path);
    EXPECT_MSG_HAS(msg, "truncated");
  }
  // Truncated inside the header.
  write_plain(dir.file("h.idx"), {0, 0, 8, 3, 0, 0});
  std::string msg = io_error([&] { read_idx(dir.file("h.idx")); });
  EXPECT_MSG_HAS(msg, dir.file("h.idx"));
  EXPECT_MSG_HAS(msg, "truncated");
  // Empty file.
  write_plain(dir.file("e.idx"), {});
  msg = io_error([&] { read_idx(dir.file("e.idx")); });
  EXPECT_MSG_HAS(msg, dir.file("e.idx"));
  EXPECT_MSG_HAS(msg, "truncated");
}

TEST(ReadIdx, TruncatedGzipFile) {
  // The compressed file itself cut short: at several points, including just before the 8-byte
  // gzip trailer (all data present, CRC and length missing).
  TempDir dir;
  std::vector<uint8_t> data = pixels(2 * 28 * 28);
  std::string good = dir.file("good.gz");
  write_gz(good, idx_bytes({2, 28, 28}, data));
  std::vector<uint8_t> gz = read_all(good);
  ASSERT_GT(gz.size(), 100u);
  for (size_t keep : {size_t{20}, gz.size() / 2, gz.size() - 20, gz.size() - 8, gz.size() - 3}) {
    std::string path = dir.file("cut" + std::to_string(keep) + ".gz");
    write_plain(path, std::vector<uint8_t>(gz.begin(), gz.begin() + static_cast<long>(keep)));
    std::string msg = io_error([&] { read_idx(path); });
    EXPECT_MSG_HAS(msg, path);
    EXPECT_MSG_HAS(msg, "truncated");
  }
}

TEST(ReadIdx, BadMagic) {
  TempDir dir;
  struct Case {
    std::vector<uint8_t> bytes;
    const char* problem;
  };
  std::vector<Case> cases = {
      {idx_bytes({4}, {1, 2, 3, 4}, /*type=*/0x0D), "not an unsigned-byte IDX file"},  // float IDX
      {{1, 0, 8, 1, 0, 0, 0, 1, 7}, "not an unsigned-byte IDX file"},
      {{0x1f, 0x8c, 8, 1, 0, 0, 0, 1, 7}, "not an unsigned-byte IDX file"},
      {{0, 0, 8, 0}, "0 dimensions"},
      {{0, 0, 8, 5, 0, 0, 0, 1}, "5 dimensions"},
      {{0, 0, 8, 1, 0, 0, 0, 0}, "implausible size 0"},
      {{0, 0, 8, 1, 0x80, 0, 0, 0}, "implausible size"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    std::string path = dir.file("m" + std::to_string(i));
    write_plain(path, cases[i].bytes);
    std::string msg = io_error([&] { read_idx(path); });
    EXPECT_MSG_HAS(msg, path);
    EXPECT_MSG_HAS(msg, cases[i].problem);
  }
}

TEST(ReadIdx, ExtraTrailingBytes) {
  TempDir dir;
  std::vector<uint8_t> b = idx_bytes({2, 3}, {1, 2, 3, 4, 5, 6});
  b.push_back(42);
  for (bool gz : {false, true}) {
    std::string path = dir.file(gz ? "x.gz" : "x.idx");
    if (gz) {
      write_gz(path, b);
    } else {
      write_plain(path, b);
    }
    std::string msg = io_error([&] { read_idx(path); });
    EXPECT_MSG_HAS(msg, path);
    EXPECT_MSG_HAS(msg, "bytes past");
  }
}

TEST(ReadIdx, CorruptedGzipStream) {
  TempDir dir;
  // Contents: compressible (Huffman-coded blocks), incompressible (stored blocks, where a flipped
  // byte still decodes and only the CRC can notice), and one larger than zlib's internal buffers
  // (where the data is returned before the trailer is read, so the CRC is checked only after
  // the last data byte).
  std::vector<uint8_t> structured = pixels(5 * 28 * 28);
  std::vector<uint8_t> noise(5 * 28 * 28);
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<uint8_t>(splitmix(i));
  std::vector<uint8_t> large(60000);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  int file_no = 0;
  for (const auto* data : {&structured, &noise, &large}) {
    std::vector<int64_t> dims = {static_cast<int64_t>(data->size() / 784), 28, 28};
    if (data == &large) dims = {static_cast<int64_t>(data->size())};
    std::string good = dir.file("good" + std::to_string(file_no++) + ".gz");
    write_gz(good, idx_bytes(dims, *data));
    std::vector<uint8_t> gz = read_all(good);
    ASSERT_GT(gz.size(), 200u);
    ASSERT_EQ(read_idx(good).data, *data);
    // Flip bytes all over the deflate stream (away from the 10-byte header and the 8-byte
    // trailer); every flip must be reported.
    const size_t first = 10, last = gz.size() - 9;
    for (size_t pos = first; pos < last; pos += std::max<size_t>(1, (last - first) / 60)) {
      for (uint8_t mask : {uint8_t{0xff}, uint8_t{0x01}}) {
        std::vector<uint8_t> bad = gz;
        bad[pos] ^= mask;
        if (mask == 0xff) bad[pos + 1] ^= mask;
        std::string path = dir.file("bad.gz");
        write_plain(path, bad);
        std::string msg = io_error([&] { read_idx(path); });
        EXPECT_MSG_HAS(msg, path) << " (flip at " << pos << " of " << gz.size() << ")";
        // A flip can also make the deflate stream ask for more input than the file holds, which
        // zlib cannot tell from a truncated file.
        EXPECT_TRUE(msg.find("corrupt") != std::string::npos || msg.find("truncated") != std::string::npos)
            << msg << " (flip at " << pos << " of " << gz.size() << ")";
      }
    }
  }
}

TEST(ReadIdx, CorruptedGzipStreamThatRunsOutWithTheBuffer) {
  // zlib's gzread reports a plain end of file, without checking the CRC, when a corrupted stream
  // uses up its input exactly as the caller's buffer fills; read_idx must still notice. Every
  // single-bit flip near the end of this stream must be reported (with zlib 1.2.13 the flip at
  // byte 2152 of 2252 is such a case).
  TempDir dir;
  std::vector<uint8_t> large(60000);
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  std::string good = dir.file("good.gz");
  write_gz(good, idx_bytes({60000}, large));
  std::vector<uint8_t> gz = read_all(good);
  ASSERT_GT(gz.size(), 400u);
  std::string path = dir.file("bad.gz");
  for (size_t pos = gz.size() - 208; pos < gz.size() - 8; ++pos) {
    std::vector<uint8_t> bad = gz;
    bad[pos] ^= 0x01;
    write_plain(path, bad);
    std::string msg = io_error([&] { read_idx(path); });
    EXPECT_MSG_HAS(msg, path) << " (flip at " << pos << " of " << gz.size() << ")";
    EXPECT_TRUE(msg.find("corrupt") != std::string::npos || msg.find("truncated") != std::string::npos)
        << msg << " (flip at " << pos << " of " << gz.size() << ")";
  }
}

// ---- Fashion-MNIST ----

void write_fashion(const std::string& dir, const std::string& prefix, int64_t n_images, int64_t n_labels,
                   const std::vector<uint8_t>& img, const std::vector<uint8_t>& lbl) {
  write_gz(dir + "/" + prefix + "-images-idx3-ubyte.gz", idx_bytes({n_images, 28, 28}, img));
  write_gz(dir + "/" + prefix + "-labels-idx1-ubyte.gz", idx_bytes({n_labels}, lbl));
}

TEST(FashionMnist, TinySyntheticFilesAreNormalizedNhwc) {
  TempDir dir;
  std::vector<uint8_t> img = pixels(5 * 28 * 28), lbl = {0, 9, 3, 5, 1};
  img[0] = 0;
  img[1] = 255;
  write_fashion(dir.path(), "train", 5, 5, img, lbl);
  std::vector<uint8_t> img_t = pixels(2 * 28 * 28, 99), lbl_t = {7, 2};
  write_fashion(dir.path(), "t10k", 2, 2, img_t, lbl_t);

  Dataset d = load_fashion_mnist(dir.path(), Split::train);
  EXPECT_EQ(d.size(), 5);
  EXPECT_EQ(d.num_classes, 10);
  EXPECT_EQ(d.x.shape(), Shape({5, 28, 28, 1}));
  EXPECT_EQ(d.x.dtype(), DType::f32);
  EXPECT_EQ(d.y.shape(), Shape({5}));
  EXPECT_EQ(d.y.dtype(), DType::i32);
  const float* x = d.x.data<float>();
  for (size_t i = 0; i < img.size(); ++i) {
    ASSERT_NEAR(x[i], (img[i] / 255.0 - 0.2860) / 0.3530, 1e-5) << "pixel " << i;
  }
  EXPECT_NEAR(d.x.item({0, 0, 0, 0}), -0.2860 / 0.3530, 1e-5);
  EXPECT_NEAR(d.x.item({0, 0, 1, 0}), (1 - 0.2860) / 0.3530, 1e-5);
  // NHWC: element (n, r, c, 0) is pixel n*784 + r*28 + c.
  EXPECT_NEAR(d.x.item({3, 17, 5, 0}), (img[3 * 784 + 17 * 28 + 5] / 255.0 - 0.2860) / 0.3530, 1e-5);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(d.y.item({i}), lbl[i]);

  Dataset t = load_fashion_mnist(dir.path(), Split::test);
  EXPECT_EQ(t.size(), 2);
  EXPECT_EQ(t.y.item({0}), 7);
  EXPECT_EQ(t.y.item({1}), 2);
  EXPECT_NEAR(t.x.item({1, 27, 27, 0}), (img_t[2 * 784 - 1] / 255.0 - 0.2860) / 0.3530, 1e-5);
}

TEST(FashionMnist, LabelOutOfRange) {
  TempDir dir;
  write_fashion(dir.path(), "train", 5, 5, pixels(5 * 784), {0, 1, 2, 10, 4});
  std::string msg = io_error([&] { load_fashion_mnist(dir.path(), Split::train); });
  EXPECT_MSG_HAS(msg, dir.file("train-labels-idx1-ubyte.gz"));
  EXPECT_MSG_HAS(msg, "label 10");
  EXPECT_MSG_HAS(msg, "index 3");
}

TEST(FashionMnist, MismatchedCounts) {
  TempDir dir;
  write_fashion(dir.path(), "train", 5, 4, pixels(5 * 784), {0, 1, 2, 3});
  std::string msg = io_error([&] { load_fashion_mnist(dir.path(), Split::train); });
  EXPECT_MSG_HAS(msg, "5 images");
  EXPECT_MSG_HAS(msg, "4 labels");
}

TEST(FashionMnist, WrongRankAndMissingFiles) {
  TempDir dir;
  write_gz(dir.file("train-images-idx3-ubyte.gz"), idx_bytes({5, 784}, pixels(5 * 784)));
  write_gz(dir.file("train-labels-idx1-ubyte.gz"), idx_bytes({5}, {0, 1, 2, 3, 4}));
  std::string msg = io_error([&] { load_fashion_mnist(dir.path(), Split::train); });
  EXPECT_MSG_HAS(msg, dir.file("train-images-idx3-ubyte.gz"));
  EXPECT_MSG_HAS(msg, "3 dimensions");
  msg = io_error([&] { load_fashion_mnist(dir.path(), Split::test); });
  EXPECT_MSG_HAS(msg, dir.file("t10k-images-idx3-ubyte.gz"));
}

TEST(FashionMnist, RealDatasetIfInstalled) {
  if (!fs::exists(std::string(kFashionMnistDir) + "/train-images-idx3-ubyte.gz")) {
    GTEST_SKIP() << kFashionMnistDir << " is not installed";
  }
  Dataset train = load_fashion_mnist(kFashionMnistDir, Split::train);
  Dataset test = load_fashion_mnist(kFashionMnistDir, Split::test);
  EXPECT_EQ(train.x.shape(), Shape({60000, 28, 28, 1}));
  EXPECT_EQ(train.y.shape(), Shape({60000}));
  EXPECT_EQ(test.x.shape(), Shape({10000, 28, 28, 1}));
  EXPECT_EQ(test.y.shape(), Shape({10000}));
  // Standardized with the training set's statistics; 6000 of each class in train, 1000 in test.
  double sum = 0, sq = 0;
  const float* x = train.x.data<float>();
  for (int64_t i = 0; i < train.x.numel(); ++i) {
    sum += x[i];
    sq += double(x[i]) * x[i];
  }
  double mean = sum / train.x.numel(), var = sq / train.x.numel() - mean * mean;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(var), 1.0, 0.01);
  for (const Dataset* d : {&train, &test}) {
    std::vector<int64_t> count(10, 0);
    const int32_t* y = d->y.data<int32_t>();
    for (int64_t i = 0; i < d->size(); ++i) {
      ASSERT_GE(y[i], 0);
      ASSERT_LE(y[i], 9);
      ++count[y[i]];
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(count[c], d->size() / 10) << "class " << c;
  }
}

// ---- synthetic data ----

TEST(SyntheticClassification, ShapesLabelsReproducibility) {
  Dataset d = make_synthetic_classification(500, 7, 4, /*seed=*/3);
  EXPECT_EQ(d.size(), 500);
  EXPECT_EQ(d.num_classes, 4);
  EXPECT_EQ(d.x.shape(), Shape({500, 7}));
  EXPECT_EQ(d.x.dtype(), DType::f32);
  EXPECT_EQ(d.y.shape(), Shape({500}));
  EXPECT_EQ(d.y.dtype(), DType::i32);
  std::vector<int> count(4, 0);
  for (int64_t i = 0; i < 500; ++i) {
    int32_t y = d.y.data<int32_t>()[i];
    ASSERT_GE(y, 0);
    ASSERT_LT(y, 4);
    ++count[y];
  }
  for (int c = 0; c < 4; ++c) EXPECT_GT(count[c], 50) << "class " << c;
  for (int64_t i = 0; i < d.x.numel(); ++i) ASSERT_TRUE(std::isfinite(d.x.data<float>()[i]));

  Dataset again = make_synthetic_classification(500, 7, 4, 3);
  EXPECT_EQ(again.x.to_f32_vector(), d.x.to_f32_vector());
  EXPECT_EQ(again.y.to_f32_vector(), d.y.to_f32_vector());
  Dataset other = make_synthetic_classification(500, 7, 4, 4);
  EXPECT_NE(other.x.to_f32_vector(), d.x.to_f32_vector());
  EXPECT_NE(other.y.to_f32_vector(), d.y.to_f32_vector());

  // Blobs: examples of one class sit near their class mean (spread 0.5 per feature).
  std::vector<std::vector<double>> mean(4, std::vector<double>(7, 0));
  for (int64_t i = 0; i < 500; ++i) {
    for (int f = 0; f < 7; ++f) mean[d.y.data<int32_t>()[i]][f] += d.x.item({i, f}) / count[d.y.data<int32_t>()[i]];
  }
  double within = 0;
  for (int64_t i = 0; i < 500; ++i) {
    for (int f = 0; f < 7; ++f) {
      double e = d.x.item({i, f}) - mean[d.y.data<int32_t>()[i]][f];
      within += e * e;
    }
  }
  EXPECT_NEAR(std::sqrt(within / (500 * 7)), 0.5, 0.05);

  EXPECT_THROW(make_synthetic_classification(0, 7, 4, 1), ValueError);
  EXPECT_THROW(make_synthetic_classification(10, 0, 4, 1), ValueError);
  EXPECT_THROW(make_synthetic_classification(10, 7, 1, 1), ValueError);
}

// ---- DataLoader ----

// Example i has features [i, -i] and label i % 10, so a batch tells which examples it holds.
Dataset indexed(int64_t n) {
  Dataset d;
  d.num_classes = 10;
  d.x = Tensor::empty({n, 2});
  d.y = Tensor::empty({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    d.x.data<float>()[2 * i] = static_cast<float>(i);
    d.x.data<float>()[2 * i + 1] = static_cast<float>(-i);
    d.y.data<int32_t>()[i] = static_cast<int32_t>(i % 10);
  }
  return d;
}

std::vector<int64_t> ids(const Batch& b) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < b.x.size(0); ++i) {
    int64_t id = static_cast<int64_t>(b.x.item({i, 0}));
    EXPECT_EQ(b.x.item({i, 1}), -static_cast<double>(id));
    EXPECT_EQ(b.y.item({i}), id % 10) << "label travels with its example";
    out.push_back(id);
  }
  return out;
}

// All batches of one epoch, as example ids; checks the end-of-epoch false.
std::vector<std::vector<int64_t>> one_epoch(DataLoader& l) {
  std::vector<std::vector<int64_t>> out;
  Batch b;
  int64_t e = l.epoch();
  while (l.next(b)) {
    EXPECT_EQ(b.epoch, e);
    EXPECT_EQ(b.index, static_cast<int64_t>(out.size()));
    out.push_back(ids(b));
    EXPECT_EQ(l.position(), static_cast<int64_t>(out.size()));
  }
  EXPECT_EQ(l.epoch(), e + 1) << "false at the end of an epoch starts the next";
  EXPECT_EQ(l.position(), 0);
  return out;
}

TEST(DataLoader, BatchesPerEpoch) {
  Dataset d = indexed(10);
  EXPECT_EQ(DataLoader(d, 3, 1, true, /*drop_last=*/true).batches_per_epoch(), 3);
  EXPECT_EQ(DataLoader(d, 3, 1, true, /*drop_last=*/false).batches_per_epoch(), 4);
  EXPECT_EQ(DataLoader(d, 5, 1, true, true).batches_per_epoch(), 2);
  EXPECT_EQ(DataLoader(d, 5, 1, true, false).batches_per_epoch(), 2);
  EXPECT_EQ(DataLoader(d, 10, 1, true, true).batches_per_epoch(), 1);
  EXPECT_EQ(DataLoader(d, 1, 1, true, true).batches_per_epoch(), 10);

  DataLoader keep(d, 3, 1, true, false);
  auto e = one_epoch(keep);
  ASSERT_EQ(e.size(), 4u);
  EXPECT_EQ(e[0].size(), 3u);
  EXPECT_EQ(e[3].size(), 1u) << "the last partial batch is returned when !drop_last";
}

TEST(DataLoader, EveryExampleExactlyOncePerEpoch) {
  Dataset d = indexed(100);
  for (bool shuffle : {true, false}) {
    DataLoader l(d, 7, /*seed=*/5, shuffle, /*drop_last=*/false);
    for (int epoch = 0; epoch < 3; ++epoch) {
      auto batches = one_epoch(l);
      ASSERT_EQ(batches.size(), 15u);
      std::map<int64_t, int> seen;
      for (const auto& b : batches) {
        for (int64_t id : b) ++seen[id];
      }
      ASSERT_EQ(seen.size(), 100u) << "epoch " << epoch;
      for (auto [id, k] : seen) EXPECT_EQ(k, 1) << "example " << id << " epoch " << epoch;
      if (!shuffle) {
        for (size_t i = 0; i < batches.size(); ++i) {
          for (size_t j = 0; j < batches[i].size(); ++j) EXPECT_EQ(batches[i][j], static_cast<int64_t>(7 * i + j));
        }
      }
    }
  }
  // drop_last: 14 full batches of distinct examples, 2 left out.
  DataLoader l(d, 7, 5, true, true);
  auto batches = one_epoch(l);
  ASSERT_EQ(batches.size(), 14u);
  std::set<int64_t> seen;
  for (const auto& b : batches) {
    EXPECT_EQ(b.size(), 7u);
    seen.insert(b.begin(), b.end());
  }
  EXPECT_EQ(seen.size(), 98u);
}

TEST(DataLoader, OrderIsReproducibleAndDiffersBetweenEpochsAndSeeds) {
  Dataset d = indexed(64);
  DataLoader a(d, 8, 11), b(d, 8, 11), c(d, 8, 12);
  std::vector<std::vector<std::vector<int64_t>>> ea, eb, ec;
  for (int e = 0; e < 3; ++e) {
    ea.push_back(one_epoch(a));
    eb.push_back(one_epoch(b));
    ec.push_back(one_epoch(c));
  }
  EXPECT_EQ(ea, eb) << "same seed, same order";
  EXPECT_NE(ea[0], ea[1]) << "epochs are shuffled differently";
  EXPECT_NE(ea[1], ea[2]);
  EXPECT_NE(ea[0], ea[2]);
  for (int e = 0; e < 3; ++e) EXPECT_NE(ea[e], ec[e]) << "seeds differ, epoch " << e;
}

TEST(DataLoader, SeekResumesExactly) {
  Dataset d = indexed(50);
  const int64_t kEpochs = 3;
  // The uninterrupted reference: every batch of 3 epochs.
  DataLoader ref(d, 6, 21, true, false);
  std::vector<std::vector<std::vector<int64_t>>> all;
  for (int64_t e = 0; e < kEpochs; ++e) all.push_back(one_epoch(ref));
  const int64_t per = ref.batches_per_epoch();
  ASSERT_EQ(per, 9);

  for (int64_t e = 0; e < kEpochs; ++e) {
    for (int64_t i = 0; i <= per; ++i) {
      SCOPED_TRACE(testing::Message() << "seek(" << e << ", " << i << ")");
      DataLoader l(d, 6, 21, true, false);
      Batch b;
      ASSERT_TRUE(l.next(b));  // a loader that has already moved on
      l.seek(e, i);
      EXPECT_EQ(l.epoch(), e);
      EXPECT_EQ(l.position(), i);
      if (i == per) {
        EXPECT_FALSE(l.next(b)) << "seeking to the end of an epoch";
        EXPECT_EQ(l.epoch(), e + 1);
        if (e + 1 < kEpochs) {
          ASSERT_TRUE(l.next(b));
          EXPECT_EQ(ids(b), all[e + 1][0]);
        }
        continue;
      }
      ASSERT_TRUE(l.next(b));
      EXPECT_EQ(b.epoch, e);
      EXPECT_EQ(b.index, i);
      EXPECT_EQ(ids(b), all[e][i]);
      // And the rest of the epoch follows as well.
      for (int64_t k = i + 1; k < per; ++k) {
        ASSERT_TRUE(l.next(b));
        EXPECT_EQ(ids(b), all[e][k]);
      }
      EXPECT_FALSE(l.next(b));
    }
  }
  DataLoader l(d, 6, 21);
  EXPECT_THROW(l.seek(0, l.batches_per_epoch() + 1), ValueError);
  EXPECT_THROW(l.seek(-1, 0), ValueError);
  EXPECT_THROW(l.seek(0, -1), ValueError);
}

TEST(DataLoader, BadBatchSize) {
  Dataset d = indexed(10);
  EXPECT_THROW(DataLoader(d, 11, 1), ValueError);
  try {
    DataLoader l(d, 11, 1);
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("11"), std::string::npos) << e.what();
  }
  EXPECT_THROW(DataLoader(d, 0, 1), ValueError);
  EXPECT_THROW(DataLoader(d, -3, 1), ValueError);
  // Without drop_last an oversized batch is one short batch holding the whole dataset.
  DataLoader l(d, 11, 1, true, false);
  EXPECT_EQ(l.batches_per_epoch(), 1);
  Batch b;
  ASSERT_TRUE(l.next(b));
  EXPECT_EQ(b.x.size(0), 10);
}

}  // namespace
}  // namespace tessera
