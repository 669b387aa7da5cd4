// pybind11 bindings: tessera._tessera. numpy in and out; errors map onto Python exceptions.
// The nn and training APIs are registered from bindings_nn.cc and bindings_train.cc.
#include "bindings.h"

#include <tessera/tessera.h>

#include <pybind11/stl.h>

#include <cstring>

namespace py = pybind11;
using namespace tessera;
using tessera::python::from_numpy;
using tessera::python::to_numpy;

namespace tessera::python {
namespace {

template <typename T>
py::array_t<T> contiguous_array(const py::array& a) {
  return py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
}

template <typename T>
Tensor copy_as(const py::array& a, DType dt) {
  auto c = contiguous_array<T>(a);
  if (!c) throw py::error_already_set();  // numpy could not convert (message set by numpy)
  std::vector<int64_t> dims(c.shape(), c.shape() + c.ndim());
  Tensor t = Tensor::empty(Shape(dims), dt);
  std::memcpy(t.raw_data(), c.data(), t.nbytes());
  return t;
}

template <typename T>
py::array to_array(const Tensor& t) {
  Tensor c = t.contiguous();
  std::vector<py::ssize_t> shape(t.shape().dims().begin(), t.shape().dims().end());
  py::array_t<T> out(shape);
  std::memcpy(out.mutable_data(), c.raw_data(), c.nbytes());
  return std::move(out);
}

template <typename T>
py::array view_array(const Tensor& t) {
  std::vector<py::ssize_t> shape(t.shape().dims().begin(), t.shape().dims().end());
  auto* owner = new Tensor(t);  // shares the storage; freed with the array
  py::capsule base(owner, [](void* p) { delete static_cast<Tensor*>(p); });
  py::array_t<T> out(shape, static_cast<const T*>(t.raw_data()), base);
  out.attr("setflags")(py::arg("write") = false);
  return std::move(out);
}

}  // namespace

Tensor from_numpy(const py::array& a) {
  if (a.dtype().is(py::dtype::of<int32_t>())) return copy_as<int32_t>(a, DType::i32);
  if (a.dtype().is(py::dtype::of<int64_t>())) return copy_as<int64_t>(a, DType::i64);
  if (a.dtype().kind() == 'f') return copy_as<float>(a, DType::f32);
  TESSERA_THROW(TypeError, "from_numpy: unsupported numpy dtype '",
                py::str(a.dtype()).cast<std::string>(), "' (use float32/float64, int32 or int64)");
}

Tensor from_numpy_as(const py::array& a, DType dtype) {
  char kind = a.dtype().kind();
  TESSERA_CHECK_AS(TypeError, kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b',
                   "expected a numeric array, got numpy dtype '",
                   py::str(a.dtype()).cast<std::string>(), "'");
  switch (dtype) {
    case DType::f32:
      return copy_as<float>(a, DType::f32);
    case DType::i32:
      return copy_as<int32_t>(a, DType::i32);
    case DType::i64:
      return copy_as<int64_t>(a, DType::i64);
    default:
      TESSERA_THROW(TypeError, "from_numpy_as: cannot convert to ", dtype_name(dtype));
  }
}

py::array to_numpy(const Tensor& t) {
  switch (t.dtype()) {
    case DType::i32:
      return to_array<int32_t>(t);
    case DType::i64:
      return to_array<int64_t>(t);
    case DType::f32:
      return to_array<float>(t);
    default:
      return to_array<float>(t.to(DType::f32));  // bf16 / cfp8: decoded, exact
  }
}

py::array numpy_view(const Tensor& t) {
  if (!t.defined() || !t.is_contiguous()) return to_numpy(t);
  switch (t.dtype()) {
    case DType::i32:
      return view_array<int32_t>(t);
    case DType::i64:
      return view_array<int64_t>(t);
    case DType::f32:
      return view_array<float>(t);
    default:
      return to_numpy(t);
  }
}

DType to_dtype(py::handle o) {
  if (py::isinstance<py::str>(o)) return dtype_from_name(o.cast<std::string>());
  return o.cast<DType>();
}

Rounding to_rounding(const std::string& s) {
  if (s == "nearest" || s == "nearest_even") return Rounding::nearest_even;
  if (s == "stochastic") return Rounding::stochastic;
  TESSERA_THROW(ValueError, "unknown rounding '", s, "' (known: nearest, stochastic)");
}

}  // namespace tessera::python

namespace {

using python::to_dtype;
using python::to_rounding;

Cfp8Layout to_layout(const std::string& s) {
  if (s == "e4m3") return Cfp8Layout::e4m3;
  if (s == "e5m2") return Cfp8Layout::e5m2;
  TESSERA_THROW(ValueError, "unknown cfp8 layout '", s, "' (known: e4m3, e5m2)");
}

Cfp8Format to_format(const std::string& layout, int bias) {
  Cfp8Layout l = to_layout(layout);
  if (bias < 0) bias = cfp8_default_bias(l);
  check_cfp8_bias(bias);
  return {l, bias};
}

using python::contiguous_array;
using python::to_array;

py::array codes(const Tensor& t) {
  switch (t.dtype()) {
    case DType::bf16:
      return to_array<uint16_t>(t);
    case DType::cfp8_e4m3:
    case DType::cfp8_e5m2:
      return to_array<uint8_t>(t);
    default:
      return to_numpy(t);
  }
}

}  // namespace

PYBIND11_MODULE(_tessera, m) {
  m.doc() = "tessera C++ core (see the tessera package docstring)";
  m.attr("__version__") = tessera::version();

  static py::exception<CommError> comm_error(m, "CommError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const IndexError& e) {
      PyErr_SetString(PyExc_IndexError, e.what());
    } catch (const NotImplementedError& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    } catch (const OutOfMemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
    } catch (const IoError& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const TimeoutError& e) {
      PyErr_SetString(PyExc_TimeoutError, e.what());
    } catch (const CommError& e) {
      comm_error(e.what());
    } catch (const InternalError& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  });

  py::enum_<DType>(m, "DType")
      .value("f32", DType::f32)
      .value("bf16", DType::bf16)
      .value("cfp8_e4m3", DType::cfp8_e4m3)
      .value("cfp8_e5m2", DType::cfp8_e5m2)
      .value("i32", DType::i32)
      .value("i64", DType::i64);
  m.def("dtype_from_name", [](const std::string& s) { return dtype_from_name(s); });
  m.def("dtype_table", [] {
    py::list out;
    for (const auto& d : kDTypeTable) {
      py::dict row;
      row["id"] = static_cast<int>(d.id);
      row["name"] = d.name;
      row["size"] = d.size;
      row["is_float"] = d.is_float;
      row["is_cfp8"] = d.is_cfp8;
      out.append(row);
    }
    return out;
  });

  m.def("info", &info_report, "The `tessera info` report as a string");
  m.def(
      "isa_ladder",
      [] {
        py::list out;
        for (auto isa : kernels::kAllIsas)
          out.append(py::make_tuple(kernels::isa_name(isa), kernels::isa_unavailable_reason(isa)));
        return out;
      },
      "[(rung, reason it is unavailable or '')], lowest first");
  m.def("active_isa", [] { return std::string(kernels::isa_name(kernels::active_isa())); });
  m.def(
      "set_isa_cap", [](const std::string& s) { kernels::set_isa_cap(kernels::isa_from_name(s)); },
      "Cap the kernels' ISA rung (scalar, avx2, avx512, avx512_bf16) for this process");

  // ---- scalar-type conversions on numpy arrays (vectorized kernels) ----
  m.def(
      "f32_to_bf16",
      [](const py::array& a) {
        auto x = contiguous_array<float>(a);
        py::array_t<uint16_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        kernels::f32_to_bf16(x.data(), out.mutable_data(), static_cast<size_t>(x.size()));
        return out;
      },
      py::arg("x"), "float32 -> bf16 codes (uint16), round to nearest even");
  m.def(
      "bf16_to_f32",
      [](const py::array& a) {
        auto x = contiguous_array<uint16_t>(a);
        py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        kernels::bf16_to_f32(x.data(), out.mutable_data(), static_cast<size_t>(x.size()));
        return out;
      },
      py::arg("codes"));
  m.def(
      "cfp8_encode",
      [](const py::array& a, const std::string& layout, int bias, const std::string& rounding,
         uint64_t seed) {
        auto x = contiguous_array<float>(a);
        Cfp8Format f = to_format(layout, bias);
        py::array_t<uint8_t> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        kernels::f32_to_cfp8(x.data(), out.mutable_data(), static_cast<size_t>(x.size()), f,
                             to_rounding(rounding), seed);
        return out;
      },
      py::arg("x"), py::arg("layout") = "e4m3", py::arg("bias") = -1,
      py::arg("rounding") = "nearest", py::arg("seed") = 0,
      "float32 -> cfp8 codes (uint8); bias -1 = layout default");
  m.def(
      "cfp8_decode",
      [](const py::array& a, const std::string& layout, int bias) {
        auto x = contiguous_array<uint8_t>(a);
        py::array_t<float> out(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
        kernels::cfp8_to_f32(x.data(), out.mutable_data(), static_cast<size_t>(x.size()),
                             to_format(layout, bias));
        return out;
      },
      py::arg("codes"), py::arg("layout") = "e4m3", py::arg("bias") = -1);
  m.def(
      "cfp8_max",
      [](const std::string& layout, int bias) { return cfp8_max(to_format(layout, bias)); },
      py::arg("layout") = "e4m3", py::arg("bias") = -1);
  m.def("cfp8_invalid_count", &cfp8_invalid_count, "NaN inputs seen by cfp8 encoders so far");

  py::class_<Tensor>(m, "Tensor")
      .def(py::init<>())
      .def_static("from_numpy", &from_numpy, py::arg("array"),
                  "Copy a float32/float64/int32/int64 array")
      .def_static(
          "zeros",
          [](std::vector<int64_t> shape, const py::object& dtype, int bias) {
            return Tensor::zeros(Shape(shape), to_dtype(dtype), bias);
          },
          py::arg("shape"), py::arg("dtype") = "f32", py::arg("bias") = -1)
      .def_static(
          "normal",
          [](std::vector<int64_t> shape, double mean, double std, uint64_t seed,
             const py::object& dtype) {
            return Tensor::normal(Shape(shape), mean, std, seed, to_dtype(dtype));
          },
          py::arg("shape"), py::arg("mean") = 0.0, py::arg("std") = 1.0, py::arg("seed") = 0,
          py::arg("dtype") = "f32")
      .def_static(
          "uniform",
          [](std::vector<int64_t> shape, double lo, double hi, uint64_t seed,
             const py::object& dtype) {
            return Tensor::uniform(Shape(shape), lo, hi, seed, to_dtype(dtype));
          },
          py::arg("shape"), py::arg("low") = 0.0, py::arg("high") = 1.0, py::arg("seed") = 0,
          py::arg("dtype") = "f32")
      .def_property_readonly("shape",
                             [](const Tensor& t) { return py::tuple(py::cast(t.shape().dims())); })
      .def_property_readonly("strides",
                             [](const Tensor& t) { return py::tuple(py::cast(t.strides())); })
      .def_property_readonly("dtype", &Tensor::dtype)
      .def_property_readonly("bias", &Tensor::cfp8_bias)
      .def_property_readonly("ndim", &Tensor::ndim)
      .def("numel", &Tensor::numel)
      .def("is_contiguous", &Tensor::is_contiguous)
      .def("numpy", &to_numpy, "Values as numpy (bf16/cfp8 decoded to float32, exactly)")
      .def("codes", &codes, "Raw codes: uint16 for bf16, uint8 for cfp8")
      .def(
          "to",
          [](const Tensor& t, const py::object& dtype, int bias, const std::string& rounding,
             uint64_t seed) { return t.to(to_dtype(dtype), bias, to_rounding(rounding), seed); },
          py::arg("dtype"), py::arg("bias") = -1, py::arg("rounding") = "nearest",
          py::arg("seed") = 0)
      .def("transpose", &Tensor::transpose)
      .def("permute", &Tensor::permute)
      .def("slice", &Tensor::slice, py::arg("dim"), py::arg("start"), py::arg("end"),
           py::arg("step") = 1)
      .def("select", &Tensor::select)
      .def("reshape", [](const Tensor& t, std::vector<int64_t> s) { return t.reshape(Shape(s)); })
      .def("contiguous", &Tensor::contiguous)
      .def("clone", &Tensor::clone)
      .def("to_proto_bytes",
           [](const Tensor& t) {
             std::string s;
             tensor_to_proto(t).SerializeToString(&s);
             return py::bytes(s);
           })
      .def_static("from_proto_bytes",
                  [](const py::bytes& b) {
                    proto::Tensor p;
                    TESSERA_CHECK(p.ParseFromString(std::string(b)),
                                  "from_proto_bytes: not a tessera.proto.Tensor message");
                    return tensor_from_proto(p);
                  })
      .def("__repr__", [](const Tensor& t) { return t.str(); });

  python::bind_nn(m);
  python::bind_train(m);
}
