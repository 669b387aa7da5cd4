// Shape: the extents of a tensor, validated on construction (every extent >= 0).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace tessera {

class Shape {
 public:
  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::vector<int64_t> dims);

  int ndim() const { return static_cast<int>(dims_.size()); }
  // Negative d counts from the back; IndexError when out of range.
  int64_t operator[](int d) const { return dims_[normalize_dim(d)]; }
  int normalize_dim(int d) const;
  int64_t numel() const;
  const std::vector<int64_t>& dims() const { return dims_; }
  // Row-major strides in elements.
  std::vector<int64_t> contiguous_strides() const;
  std::string str() const;  // "[2, 3]"

  bool operator==(const Shape& o) const { return dims_ == o.dims_; }
  bool operator!=(const Shape& o) const { return dims_ != o.dims_; }

 private:
  void validate() const;
  std::vector<int64_t> dims_;
};

std::string dims_str(const std::vector<int64_t>& dims);

}  // namespace tessera
