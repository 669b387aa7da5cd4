// Shared by the binding sources of tessera._tessera: numpy <-> Tensor conversion, Python-owned
// modules handed to C++, and the per-area registration functions.
//
//   bindings.cc        module, exceptions, dtypes, conversions, Tensor
//   bindings_nn.cc     tessera.nn (Var, Trace, Graph, Module + trampoline, layers), tessera.models
//   bindings_train.cc  Dataset, data sources, Trainer
//
// Threading: every function here needs the GIL.
#pragma once

#include <tessera/core/cfp8.h>
#include <tessera/core/nn.h>
#include <tessera/core/tensor.h>

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

namespace tessera::python {

namespace py = pybind11;

// Copy of a float32/float64/int32/int64 array (floats become f32).
Tensor from_numpy(const py::array& a);
// Copy converted to `dtype` (f32, i32 or i64), whatever the array's numeric dtype.
Tensor from_numpy_as(const py::array& a, DType dtype);
// Copy as numpy; bf16 / cfp8 are decoded to float32 exactly.
py::array to_numpy(const Tensor& t);
// Read-only array sharing t's storage (contiguous f32 / i32 / i64 tensors; others are copied).
py::array numpy_view(const Tensor& t);

// A DType from a name ("f32", "i32", ...) or a tessera.DType.
DType to_dtype(py::handle o);
Rounding to_rounding(const std::string& s);  // "nearest" | "stochastic"

// A shared_ptr to the module behind a Python object that also keeps the Python object alive, so
// a Python subclass's forward() and attributes survive as long as any C++ owner (a parent
// module, a Sequential, a Trainer) holds it. TypeError if obj is not a tessera.nn.Module.
std::shared_ptr<nn::Module> share_module(py::handle obj);

// The name a Trainer stores in checkpoints: "mlp" / "cnn" / "transformer" for the built-in
// models (as `tessera train` does), else the Python class name.
std::string default_model_name(py::handle model);

void bind_nn(py::module_& m);
void bind_train(py::module_& m);

}  // namespace tessera::python
