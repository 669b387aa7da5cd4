// Tensor: a strided view of host memory with a dtype (and, for cfp8, an exponent bias).
//
//   Tensor x = Tensor::normal({64, 784}, 0.0, 1.0, /*seed=*/1);   // f32
//   Tensor xb = x.to(DType::bf16);                                // round to nearest even
//   Tensor x8 = x.to(DType::cfp8_e4m3, /*bias=*/9);
//   Tensor col = x.slice(1, 0, 10).transpose(0, 1);               // views share storage
//   std::cout << col.contiguous();
//
// Storage is reference counted and 64-byte aligned; views (slice, select, transpose, permute,
// view) share it, and writes through one view are seen by the others. A Tensor is not
// synchronized: concurrent writers must coordinate. Element types: f32 as float, bf16 as
// uint16_t codes, cfp8 as uint8_t codes, i32, i64.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/dtype.h>
#include <tessera/core/shape.h>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

// An owned, 64-byte aligned, zero-initialized byte buffer.
class Storage {
 public:
  static constexpr size_t kAlignment = 64;
  explicit Storage(size_t nbytes);  // OutOfMemoryError names the size
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // bias = -1 picks the layout's default (e4m3: 7, e5m2: 15); ignored for non-cfp8 dtypes.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32, int cfp8_bias = -1);
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32, int cfp8_bias = -1);
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32, int cfp8_bias = -1);
  // A contiguous tensor over existing storage (the executor's buffer reuse); the storage must
  // hold at least numel * itemsize bytes.
  static Tensor from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype,
                             int cfp8_bias = -1);
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
  static Tensor arange(int64_t n, DType dtype = DType::f32);
  // Seeded, reproducible fills (computed in f32, then converted to dtype).
  static Tensor uniform(const Shape& shape, double lo, double hi, uint64_t seed,
                        DType dtype = DType::f32);
  static Tensor normal(const Shape& shape, double mean, double stddev, uint64_t seed,
                       DType dtype = DType::f32);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const std::vector<int64_t>& strides() const { return strides_; }  // in elements
  int64_t offset() const { return offset_; }                        // in elements
  DType dtype() const { return dtype_; }
  int cfp8_bias() const { return cfp8_bias_; }
  Cfp8Format cfp8_format() const;  // TypeError unless dtype is cfp8
  int ndim() const { return shape_.ndim(); }
  int64_t numel() const { return shape_.numel(); }
  int64_t size(int d) const { return shape_[d]; }
  size_t itemsize() const { return dtype_size(dtype_); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(); }
  bool is_contiguous() const;
  bool shares_storage(const Tensor& o) const { return storage_ && storage_ == o.storage_; }
  const std::string& dtype_str() const;

  // First element. Typed access checks the dtype's storage type.
  void* raw_data() const;
  template <typename T>
  T* data() const;

  // ---- views (share storage) ----
  Tensor view(const Shape& shape) const;  // needs a contiguous tensor; -1 not supported
  Tensor slice(int dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor select(int dim, int64_t index) const;  // drops dim
  Tensor transpose(int d0, int d1) const;
  Tensor permute(const std::vector<int>& order) const;

  // ---- copies ----
  Tensor contiguous() const;  // this if already contiguous
  Tensor clone() const;       // always a fresh contiguous copy
  Tensor reshape(const Shape& shape) const;  // view when possible, copy otherwise
  // Convert. For cfp8 targets bias = -1 takes the layout default.
  Tensor to(DType dtype, int cfp8_bias = -1, Rounding rounding = Rounding::nearest_even,
            uint64_t seed = 0) const;
  void copy_from(const Tensor& src);  // same shape; converts dtype as `to` does (nearest even)

  // ---- element access (slow; for tests, printing, small tensors) ----
  double item(const std::vector<int64_t>& index) const;
  double item() const;  // single-element tensors
  void set_item(const std::vector<int64_t>& index, double value);
  std::vector<float> to_f32_vector() const;

  std::string str(int64_t max_elements = 1000) const;

 private:
  std::shared_ptr<Storage> storage_;
  Shape shape_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
  int cfp8_bias_ = 0;

  void check_defined(const char* what) const;
  int64_t linear_offset(const std::vector<int64_t>& index) const;
};

std::ostream& operator<<(std::ostream& os, const Tensor& t);

// Storage type of each dtype, for Tensor::data<T>().
template <typename T>
bool dtype_stores(DType t);

}  // namespace tessera
