#include <tessera/core/shape.h>

#include <tessera/core/error.h>

#include <limits>

namespace tessera {

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

Shape::Shape(std::initializer_list<int64_t> dims) : dims_(dims) { validate(); }
Shape::Shape(std::vector<int64_t> dims) : dims_(std::move(dims)) { validate(); }

void Shape::validate() const {
  int64_t total = 1;
  for (size_t i = 0; i < dims_.size(); ++i) {
    TESSERA_CHECK(dims_[i] >= 0, "bad shape ", dims_str(dims_), ": dimension ", i, " is ",
                  dims_[i], " (extents must be >= 0)");
    if (dims_[i] > 0) {
      TESSERA_CHECK(total <= std::numeric_limits<int64_t>::max() / dims_[i], "bad shape ",
                    dims_str(dims_), ": element count overflows int64");
      total *= dims_[i];
    }
  }
}

int Shape::normalize_dim(int d) const {
  int n = ndim();
  TESSERA_CHECK_INDEX(d >= -n && d < n, "dimension ", d, " out of range for shape ", str(),
                      " (", n, " dimensions)");
  return d < 0 ? d + n : d;
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int64_t d : dims_) n *= d;
  return n;
}

std::vector<int64_t> Shape::contiguous_strides() const {
  std::vector<int64_t> s(dims_.size());
  int64_t acc = 1;
  for (int i = ndim() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= std::max<int64_t>(dims_[i], 1);
  }
  return s;
}

std::string Shape::str() const { return dims_str(dims_); }

}  // namespace tessera
