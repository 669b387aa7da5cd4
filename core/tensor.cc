#include <tessera/core/tensor.h>

#include <tessera/core/random.h>
#include <tessera/kernels/convert.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iomanip>
#include <limits>
#include <numeric>
#include <ostream>
#include <sstream>

namespace tessera {

// ---- Storage -------------------------------------------------------------------------------

Storage::Storage(size_t nbytes) : nbytes_(nbytes) {
  size_t rounded = (std::max<size_t>(nbytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  data_ = std::aligned_alloc(kAlignment, rounded);
  if (!data_) {
    TESSERA_THROW(OutOfMemoryError, "could not allocate ", nbytes, " bytes (",
                  static_cast<double>(nbytes) / (1 << 20), " MiB) for tensor storage");
  }
  std::memset(data_, 0, rounded);
}
Storage::~Storage() { std::free(data_); }

template <typename T>
bool dtype_stores(DType t) {
  switch (t) {
    case DType::f32: return std::is_same_v<T, float>;
    case DType::bf16: return std::is_same_v<T, uint16_t>;
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2: return std::is_same_v<T, uint8_t>;
    case DType::i32: return std::is_same_v<T, int32_t>;
    case DType::i64: return std::is_same_v<T, int64_t>;
  }
  return false;
}
template bool dtype_stores<float>(DType);
template bool dtype_stores<uint16_t>(DType);
template bool dtype_stores<uint8_t>(DType);
template bool dtype_stores<int32_t>(DType);
template bool dtype_stores<int64_t>(DType);

namespace {

int resolve_bias(DType dtype, int bias) {
  if (!is_cfp8(dtype)) return 0;
  Cfp8Layout layout = dtype == DType::cfp8_e4m3 ? Cfp8Layout::e4m3 : Cfp8Layout::e5m2;
  if (bias < 0) return cfp8_default_bias(layout);
  check_cfp8_bias(bias);
  return bias;
}

// Calls fn(element offset) for every element in row-major order of the logical index.
void for_each_offset(const Shape& shape, const std::vector<int64_t>& strides, int64_t base,
                     const std::function<void(int64_t)>& fn) {
  int64_t n = shape.numel();
  if (n == 0) return;
  int nd = shape.ndim();
  std::vector<int64_t> idx(nd, 0);
  int64_t off = base;
  for (int64_t k = 0; k < n; ++k) {
    fn(off);
    for (int d = nd - 1; d >= 0; --d) {
      if (++idx[d] < shape.dims()[d]) {
        off += strides[d];
        break;
      }
      off -= strides[d] * (idx[d] - 1);
      idx[d] = 0;
    }
  }
}

double decode_element(const void* p, DType dtype, int bias) {
  switch (dtype) {
    case DType::f32: return *static_cast<const float*>(p);
    case DType::bf16: return bf16_to_f32(*static_cast<const uint16_t*>(p));
    case DType::cfp8_e4m3: return cfp8_decode(*static_cast<const uint8_t*>(p), {Cfp8Layout::e4m3, bias});
    case DType::cfp8_e5m2: return cfp8_decode(*static_cast<const uint8_t*>(p), {Cfp8Layout::e5m2, bias});
    case DType::i32: return *static_cast<const int32_t*>(p);
    case DType::i64: return static_cast<double>(*static_cast<const int64_t*>(p));
  }
  return 0;
}

template <typename I>
I checked_int(double v, DType dtype) {
  TESSERA_CHECK(std::isfinite(v) && v >= static_cast<double>(std::numeric_limits<I>::min()) &&
                    v <= static_cast<double>(std::numeric_limits<I>::max()),
                "value ", v, " cannot be converted to ", dtype_name(dtype));
  return static_cast<I>(v);  // truncates toward zero, as numpy's astype
}

void encode_element(void* p, double v, DType dtype, int bias) {
  switch (dtype) {
    case DType::f32: *static_cast<float*>(p) = static_cast<float>(v); break;
    case DType::bf16: *static_cast<uint16_t*>(p) = f32_to_bf16(static_cast<float>(v)); break;
    case DType::cfp8_e4m3:
      *static_cast<uint8_t*>(p) = cfp8_encode(static_cast<float>(v), {Cfp8Layout::e4m3, bias});
      break;
    case DType::cfp8_e5m2:
      *static_cast<uint8_t*>(p) = cfp8_encode(static_cast<float>(v), {Cfp8Layout::e5m2, bias});
      break;
    case DType::i32: *static_cast<int32_t*>(p) = checked_int<int32_t>(v, dtype); break;
    case DType::i64: *static_cast<int64_t*>(p) = checked_int<int64_t>(v, dtype); break;
  }
}

// Contiguous src (numel elements) -> contiguous f32.
void widen_to_f32(const Tensor& src, float* out) {
  size_t n = static_cast<size_t>(src.numel());
  const void* p = src.raw_data();
  switch (src.dtype()) {
    case DType::f32: std::memcpy(out, p, n * 4); break;
    case DType::bf16: kernels::bf16_to_f32(static_cast<const uint16_t*>(p), out, n); break;
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2: kernels::cfp8_to_f32(static_cast<const uint8_t*>(p), out, n, src.cfp8_format()); break;
    case DType::i32:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<const int32_t*>(p)[i]);
      break;
    case DType::i64:
      for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<const int64_t*>(p)[i]);
      break;
  }
}

void narrow_from_f32(const float* in, Tensor& dst, Rounding rounding, uint64_t seed) {
  size_t n = static_cast<size_t>(dst.numel());
  void* p = dst.raw_data();
  switch (dst.dtype()) {
    case DType::f32: std::memcpy(p, in, n * 4); break;
    case DType::bf16: kernels::f32_to_bf16(in, static_cast<uint16_t*>(p), n); break;
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2:
      kernels::f32_to_cfp8(in, static_cast<uint8_t*>(p), n, dst.cfp8_format(), rounding, seed);
      break;
    case DType::i32:
      for (size_t i = 0; i < n; ++i) static_cast<int32_t*>(p)[i] = checked_int<int32_t>(in[i], DType::i32);
      break;
    case DType::i64:
      for (size_t i = 0; i < n; ++i) static_cast<int64_t*>(p)[i] = checked_int<int64_t>(in[i], DType::i64);
      break;
  }
}

}  // namespace

// ---- construction --------------------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, DType dtype, int cfp8_bias) {
  Tensor t;
  dtype_info(dtype);  // validates the id
  t.cfp8_bias_ = resolve_bias(dtype, cfp8_bias);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = shape.contiguous_strides();
  int64_t n = shape.numel();
  TESSERA_CHECK(static_cast<uint64_t>(n) <= std::numeric_limits<size_t>::max() / dtype_size(dtype),
                "tensor of shape ", shape.str(), " is too large");
  t.storage_ = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype));
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype, int cfp8_bias) {
  TESSERA_CHECK(storage != nullptr, "from_storage: null storage");
  size_t need = static_cast<size_t>(shape.numel()) * dtype_size(dtype);
  TESSERA_CHECK(storage->nbytes() >= need, "from_storage: storage of ", storage->nbytes(), " bytes is too small for ",
                shape.str(), " ", dtype_name(dtype), " (", need, " bytes)");
  Tensor t;
  t.cfp8_bias_ = resolve_bias(dtype, cfp8_bias);
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = shape.contiguous_strides();
  t.storage_ = std::move(storage);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, int cfp8_bias) {
  return empty(shape, dtype, cfp8_bias);  // storage is zero-filled; code 0 is +0 in every dtype
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, int cfp8_bias) {
  Tensor t = empty(shape, dtype, cfp8_bias);
  std::vector<char> one(t.itemsize());
  encode_element(one.data(), value, dtype, t.cfp8_bias_);
  char* p = static_cast<char*>(t.raw_data());
  for (int64_t i = 0; i < t.numel(); ++i) std::memcpy(p + i * t.itemsize(), one.data(), t.itemsize());
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& values, const Shape& shape) {
  TESSERA_CHECK(static_cast<int64_t>(values.size()) == shape.numel(), "from_vector: ", values.size(),
                " values do not fill shape ", shape.str(), " (", shape.numel(), " elements)");
  Tensor t = empty(shape, DType::f32);
  std::memcpy(t.raw_data(), values.data(), values.size() * sizeof(float));
  return t;
}

Tensor Tensor::arange(int64_t n, DType dtype) {
  TESSERA_CHECK(n >= 0, "arange: n = ", n, " must be >= 0");
  Tensor t = empty({n}, dtype);
  for (int64_t i = 0; i < n; ++i) t.set_item({i}, static_cast<double>(i));
  return t;
}

Tensor Tensor::uniform(const Shape& shape, double lo, double hi, uint64_t seed, DType dtype) {
  TESSERA_CHECK(lo <= hi, "uniform: lo = ", lo, " > hi = ", hi);
  Tensor f = empty(shape, DType::f32);
  float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i) p[i] = static_cast<float>(lo + (hi - lo) * random_uniform(seed, i));
  return f.to(dtype);
}

Tensor Tensor::normal(const Shape& shape, double mean, double stddev, uint64_t seed, DType dtype) {
  TESSERA_CHECK(stddev >= 0, "normal: stddev = ", stddev, " must be >= 0");
  Tensor f = empty(shape, DType::f32);
  float* p = f.data<float>();
  for (int64_t i = 0; i < f.numel(); ++i) p[i] = static_cast<float>(mean + stddev * random_normal(seed, i));
  return f.to(dtype);
}

// ---- properties ----------------------------------------------------------------------------

void Tensor::check_defined(const char* what) const {
  TESSERA_CHECK(defined(), what, ": tensor is undefined (default-constructed)");
}

Cfp8Format Tensor::cfp8_format() const {
  TESSERA_CHECK_TYPE(is_cfp8(dtype_), "cfp8_format: tensor dtype is ", dtype_name(dtype_),
                     ", not cfp8");
  return {dtype_ == DType::cfp8_e4m3 ? Cfp8Layout::e4m3 : Cfp8Layout::e5m2, cfp8_bias_};
}

const std::string& Tensor::dtype_str() const {
  static thread_local std::string s;
  s = dtype_name(dtype_);
  if (is_cfp8(dtype_)) s += "(bias=" + std::to_string(cfp8_bias_) + ")";
  return s;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (int d = ndim() - 1; d >= 0; --d) {
    if (shape_.dims()[d] == 1) continue;
    if (strides_[d] != expected) return false;
    expected *= shape_.dims()[d];
  }
  return true;
}

void* Tensor::raw_data() const {
  check_defined("raw_data");
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<int64_t>(itemsize());
}

template <typename T>
T* Tensor::data() const {
  TESSERA_CHECK_TYPE(dtype_stores<T>(dtype_), "data<T>: tensor dtype ", dtype_name(dtype_),
                     " is stored as ", dtype_info(dtype_).storage);
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template uint16_t* Tensor::data<uint16_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;

// ---- views ---------------------------------------------------------------------------------

Tensor Tensor::view(const Shape& shape) const {
  check_defined("view");
  TESSERA_CHECK(shape.numel() == numel(), "view: cannot view shape ", shape_.str(), " (", numel(),
                " elements) as ", shape.str(), " (", shape.numel(), " elements)");
  TESSERA_CHECK(is_contiguous(), "view: tensor of shape ", shape_.str(), " with strides ",
                dims_str(strides_), " is not contiguous; use reshape() to copy");
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = shape.contiguous_strides();
  return t;
}

Tensor Tensor::slice(int dim, int64_t start, int64_t end, int64_t step) const {
  check_defined("slice");
  int d = shape_.normalize_dim(dim);
  int64_t n = shape_.dims()[d];
  TESSERA_CHECK(step > 0, "slice: step ", step, " must be > 0");
  if (start < 0) start += n;
  if (end < 0) end += n;
  TESSERA_CHECK_INDEX(start >= 0 && start <= n && end >= start && end <= n, "slice: range [", start,
                      ", ", end, ") out of bounds for dimension ", d, " of size ", n);
  Tensor t = *this;
  std::vector<int64_t> dims = shape_.dims();
  dims[d] = (end - start + step - 1) / step;
  t.shape_ = Shape(dims);
  t.offset_ += start * strides_[d];
  t.strides_[d] *= step;
  return t;
}

Tensor Tensor::select(int dim, int64_t index) const {
  check_defined("select");
  int d = shape_.normalize_dim(dim);
  int64_t n = shape_.dims()[d];
  if (index < 0) index += n;
  TESSERA_CHECK_INDEX(index >= 0 && index < n, "select: index ", index,
                      " out of bounds for dimension ", d, " of size ", n);
  Tensor t = *this;
  std::vector<int64_t> dims = shape_.dims();
  t.offset_ += index * strides_[d];
  dims.erase(dims.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  t.shape_ = Shape(dims);
  return t;
}

Tensor Tensor::transpose(int d0, int d1) const {
  std::vector<int> order(ndim());
  std::iota(order.begin(), order.end(), 0);
  std::swap(order[shape_.normalize_dim(d0)], order[shape_.normalize_dim(d1)]);
  return permute(order);
}

Tensor Tensor::permute(const std::vector<int>& order) const {
  check_defined("permute");
  TESSERA_CHECK(static_cast<int>(order.size()) == ndim(), "permute: order has ", order.size(),
                " entries for a tensor of ", ndim(), " dimensions");
  std::vector<bool> seen(ndim(), false);
  std::vector<int64_t> dims(ndim()), strides(ndim());
  for (int i = 0; i < ndim(); ++i) {
    int d = shape_.normalize_dim(order[i]);
    TESSERA_CHECK(!seen[d], "permute: dimension ", d, " appears twice");
    seen[d] = true;
    dims[i] = shape_.dims()[d];
    strides[i] = strides_[d];
  }
  Tensor t = *this;
  t.shape_ = Shape(dims);
  t.strides_ = strides;
  return t;
}

// ---- copies --------------------------------------------------------------------------------

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor out = empty(shape_, dtype_, cfp8_bias_);
  size_t sz = itemsize();
  if (is_contiguous()) {
    std::memcpy(out.raw_data(), raw_data(), nbytes());
    return out;
  }
  const char* src = static_cast<const char*>(storage_->data());
  char* dst = static_cast<char*>(out.raw_data());
  for_each_offset(shape_, strides_, offset_, [&](int64_t off) {
    std::memcpy(dst, src + off * static_cast<int64_t>(sz), sz);
    dst += sz;
  });
  return out;
}

Tensor Tensor::contiguous() const {
  check_defined("contiguous");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::reshape(const Shape& shape) const {
  return is_contiguous() ? view(shape) : clone().view(shape);
}

Tensor Tensor::to(DType dtype, int cfp8_bias, Rounding rounding, uint64_t seed) const {
  check_defined("to");
  int bias = resolve_bias(dtype, cfp8_bias);
  if (dtype == dtype_ && bias == cfp8_bias_) return *this;
  Tensor src = contiguous();
  Tensor out = empty(shape_, dtype, bias);
  size_t n = static_cast<size_t>(numel());
  bool int_to_int = !dtype_info(dtype_).is_float && !dtype_info(dtype).is_float;
  if (int_to_int) {  // exact path, no detour through float
    for (size_t i = 0; i < n; ++i) {
      double v = dtype_ == DType::i32 ? src.data<int32_t>()[i] : static_cast<double>(src.data<int64_t>()[i]);
      if (dtype == DType::i32) {
        out.data<int32_t>()[i] = checked_int<int32_t>(v, dtype);
      } else {
        out.data<int64_t>()[i] = dtype_ == DType::i32 ? src.data<int32_t>()[i] : src.data<int64_t>()[i];
      }
    }
    return out;
  }
  if (dtype_ == DType::f32) {
    narrow_from_f32(src.data<float>(), out, rounding, seed);
  } else if (dtype == DType::f32) {
    widen_to_f32(src, out.data<float>());
  } else {
    std::vector<float> tmp(n);
    widen_to_f32(src, tmp.data());
    narrow_from_f32(tmp.data(), out, rounding, seed);
  }
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  check_defined("copy_from");
  TESSERA_CHECK(src.shape() == shape_, "copy_from: source shape ", src.shape().str(),
                " differs from destination shape ", shape_.str());
  Tensor conv = src.to(dtype_, is_cfp8(dtype_) ? cfp8_bias_ : -1).contiguous();
  size_t sz = itemsize();
  const char* s = static_cast<const char*>(conv.raw_data());
  char* base = static_cast<char*>(storage_->data());
  for_each_offset(shape_, strides_, offset_, [&](int64_t off) {
    std::memcpy(base + off * static_cast<int64_t>(sz), s, sz);
    s += sz;
  });
}

// ---- element access ------------------------------------------------------------------------

int64_t Tensor::linear_offset(const std::vector<int64_t>& index) const {
  check_defined("item");
  TESSERA_CHECK_INDEX(static_cast<int>(index.size()) == ndim(), "index ", dims_str(index), " has ",
                      index.size(), " entries for a tensor of shape ", shape_.str());
  int64_t off = offset_;
  for (int d = 0; d < ndim(); ++d) {
    TESSERA_CHECK_INDEX(index[d] >= 0 && index[d] < shape_.dims()[d], "index ", dims_str(index),
                        " out of bounds for shape ", shape_.str());
    off += index[d] * strides_[d];
  }
  return off;
}

double Tensor::item(const std::vector<int64_t>& index) const {
  int64_t off = linear_offset(index);
  return decode_element(static_cast<const char*>(storage_->data()) + off * static_cast<int64_t>(itemsize()),
                        dtype_, cfp8_bias_);
}

double Tensor::item() const {
  check_defined("item");
  TESSERA_CHECK(numel() == 1, "item(): tensor of shape ", shape_.str(), " has ", numel(),
                " elements, not 1");
  return item(std::vector<int64_t>(ndim(), 0));
}

void Tensor::set_item(const std::vector<int64_t>& index, double value) {
  int64_t off = linear_offset(index);
  encode_element(static_cast<char*>(storage_->data()) + off * static_cast<int64_t>(itemsize()), value,
                 dtype_, cfp8_bias_);
}

std::vector<float> Tensor::to_f32_vector() const {
  Tensor f = to(DType::f32).contiguous();
  const float* p = f.data<float>();
  return std::vector<float>(p, p + f.numel());
}

// ---- printing ------------------------------------------------------------------------------

namespace {
void print_rec(std::ostream& os, const Tensor& t, std::vector<int64_t>& idx, int d, bool summarize,
               int indent) {
  constexpr int64_t kEdge = 3;
  int64_t n = t.shape().dims()[d];
  os << '[';
  for (int64_t i = 0; i < n; ++i) {
    if (summarize && n > 2 * kEdge && i == kEdge) {
      os << (d + 1 == t.ndim() ? "..., " : "...,\n" + std::string(indent + 1, ' '));
      i = n - kEdge;
    }
    idx[d] = i;
    if (d + 1 == t.ndim()) {
      os << t.item(idx);
    } else {
      print_rec(os, t, idx, d + 1, summarize, indent + 1);
    }
    if (i + 1 < n) os << (d + 1 == t.ndim() ? ", " : ",\n" + std::string(indent + 1, ' '));
  }
  os << ']';
}
}  // namespace

std::string Tensor::str(int64_t max_elements) const {
  if (!defined()) return "Tensor(undefined)";
  std::ostringstream os;
  os << "Tensor(shape=" << shape_.str() << ", dtype=" << dtype_str() << ")\n";
  os << std::setprecision(6);
  if (ndim() == 0) {
    os << item({});
  } else if (numel() == 0) {
    os << "[]";
  } else {
    std::vector<int64_t> idx(ndim(), 0);
    print_rec(os, *this, idx, 0, numel() > max_elements, 0);
  }
  return os.str();
}

std::ostream& operator<<(std::ostream& os, const Tensor& t) { return os << t.str(); }

}  // namespace tessera
