// tessera.nn and tessera.models: symbolic values (Var), traces, modules subclassable from Python,
// the built-in layers and models. The same objects as core/nn.h and runtime/models.h.
//
// Lifetimes. A Var points into its trace's graph: Vars returned to Python keep the Python
// object they were computed from alive (py::keep_alive), so a chain of Vars keeps its Trace.
// Modules are held by shared_ptr; a module passed to C++ (add_module, Sequential.add, Trainer)
// travels as share_module()'s shared_ptr, which also holds the Python object, so a Python
// subclass's forward() is still there when C++ calls it.
#include "bindings.h"

#include <tessera/runtime/models.h>

#include <pybind11/stl.h>

#include <set>
#include <sstream>

namespace tessera::python {

namespace {

using nn::Module;
using nn::Var;

std::string python_type_name(const Module* m) {
  py::object self = py::cast(m, py::return_value_policy::reference);
  return py::type::handle_of(self).attr("__name__").cast<std::string>();
}

// nn::Module with its registration API public and forward() dispatched to Python: what Python
// subclasses as tessera.nn.Module.
class PyModule : public Module {
 public:
  using Module::add_parameter;
  using Module::param;
  void add_child(const std::string& name, std::shared_ptr<Module> m) {
    for (const auto& [n, c] : registered_) {
      TESSERA_CHECK(n != name, "a child module named '", name,
                    "' is already registered (modules cannot be replaced)");
    }
    registered_.emplace_back(name, m.get());
    add_module(name, std::move(m));
  }
  bool has_child(const Module* m) const {
    for (const auto& [n, c] : registered_) {
      if (c == m) return true;
    }
    return false;
  }

  Var forward(Var x) override {
    // The Trainer may trace (its lazily built eval program) with the GIL released.
    py::gil_scoped_acquire gil;
    py::function f = py::get_override(static_cast<const Module*>(this), "forward");
    if (!f) {
      TESSERA_THROW(NotImplementedError, "tessera.nn.Module subclass '", python_type_name(this),
                    "' must define forward(self, x)");
    }
    py::object out = f(x);
    if (!py::isinstance<Var>(out)) {
      TESSERA_THROW(TypeError, python_type_name(this), ".forward() returned ",
                    py::type::handle_of(out).attr("__name__").cast<std::string>(),
                    ", expected a tessera.nn.Var");
    }
    return out.cast<Var>();
  }

 private:
  std::vector<std::pair<std::string, const Module*>> registered_;  // children, for __setattr__
};

// The module behind `self`. A Python subclass has no C++ object until Module.__init__ ran, and
// pybind11 would hand out a garbage pointer for it: TypeError instead.
Module& checked(py::handle self) {
  TESSERA_CHECK_AS(TypeError, py::isinstance<Module>(self), "expected a tessera.nn.Module, got ",
                   py::type::handle_of(self).attr("__name__").cast<std::string>());
  auto* inst = reinterpret_cast<py::detail::instance*>(self.ptr());
  TESSERA_CHECK_AS(TypeError, inst->get_value_and_holder().instance_registered(),
                   "tessera.nn.Module subclass '",
                   py::type::handle_of(self).attr("__name__").cast<std::string>(),
                   "' used before Module.__init__(): call super().__init__() first");
  return *self.cast<Module*>();
}

PyModule& python_module(py::handle self, const char* what) {
  Module& m = checked(self);
  auto* p = dynamic_cast<PyModule*>(&m);
  TESSERA_CHECK_AS(TypeError, p != nullptr, what,
                   " is for Python subclasses of tessera.nn.Module; '", python_type_name(&m),
                   "' is a built-in module");
  return *p;
}

// `self.fc = nn.Linear(...)` registers the child as add_module("fc", ...) does (as in PyTorch),
// so an attribute module is never traced without being named, trained and checkpointed.
void module_setattr(py::handle self, const py::str& name, py::handle value) {
  std::string n = name;
  if (py::isinstance<Module>(value) && !n.empty() && n[0] != '_') {
    auto* pm = dynamic_cast<PyModule*>(&checked(self));
    if (pm != nullptr && !pm->has_child(&checked(value))) pm->add_child(n, share_module(value));
  }
  py::module_::import("builtins").attr("object").attr("__setattr__")(self, name, value);
}

// `with Trace("bf16") as t:` -- the C++ trace starts recording on __enter__ (not on
// construction, as nn::Trace does) and stops on __exit__; its graph stays readable after.
class PyTrace {
 public:
  explicit PyTrace(Precision p) : precision_(p) {}
  PyTrace(const PyTrace&) = delete;
  PyTrace& operator=(const PyTrace&) = delete;
  ~PyTrace() {
    if (!trace_ || !open_) return;
    try {
      trace_->finish();
    } catch (...) {
      // Entered by hand and dropped while a later trace is still open: nn::Trace's destructor
      // would throw, so leak it instead (it stays linked into this thread's trace stack).
      (void)trace_.release();
    }
  }

  void enter() {
    TESSERA_CHECK(!trace_, "a tessera.nn.Trace can be entered only once; create a new one");
    trace_ = std::make_unique<nn::Trace>(precision_);
    open_ = true;
  }
  void exit() {
    if (trace_ && open_) trace_->finish();
    open_ = false;
  }
  nn::Trace& active(const char* what) {
    TESSERA_CHECK(trace_ && open_, "tessera.nn.Trace.", what,
                  ": the trace is not recording; use it as `with tessera.nn.Trace(...) as t:`");
    return *trace_;
  }
  Graph& graph() {
    TESSERA_CHECK(
        trace_,
        "tessera.nn.Trace.graph: nothing traced yet; use it as `with tessera.nn.Trace(...) as t:`");
    return trace_->graph();
  }
  Precision precision() const { return precision_; }
  bool recording() const { return open_; }

 private:
  Precision precision_;
  std::unique_ptr<nn::Trace> trace_;
  bool open_ = false;
};

// reshape's shape may hold one -1, inferred from the element count as numpy does.
Shape infer_shape(const Shape& from, std::vector<int64_t> dims) {
  int64_t known = 1, hole = -1;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] == -1) {
      TESSERA_CHECK(hole < 0, "reshape: only one dimension may be -1");
      hole = static_cast<int64_t>(i);
    } else {
      known *= dims[i];
    }
  }
  if (hole >= 0) {
    TESSERA_CHECK(known > 0 && from.numel() % known == 0, "reshape: cannot infer -1 reshaping ",
                  from.str(), " with ", known, " elements per -1");
    dims[hole] = from.numel() / known;
  }
  return Shape(dims);
}

py::tuple shape_tuple(const Shape& s) { return py::tuple(py::cast(s.dims())); }

py::dict named_parameters(Module& m) {
  py::dict out;
  for (const auto& [name, p] : m.named_parameters()) out[py::str(name)] = to_numpy(p->value);
  return out;
}

// All-or-nothing: every value is converted and checked before any parameter changes.
void load_parameters(Module& m, const py::dict& values, bool strict) {
  auto params = m.named_parameters();
  std::vector<std::pair<nn::Parameter*, Tensor>> updates;
  std::set<std::string> known;
  for (const auto& [name, p] : params) {
    known.insert(name);
    py::str key(name);
    if (!values.contains(key)) {
      TESSERA_CHECK(!strict, "load_parameters: no value for parameter '", name,
                    "' (pass strict=False to skip it)");
      continue;
    }
    py::array a = py::array::ensure(values[key]);
    if (!a) {
      PyErr_Clear();  // numpy's conversion error; ours names the parameter
      TESSERA_THROW(TypeError, "load_parameters: value for '", name, "' is not array-like");
    }
    Tensor t = from_numpy_as(a, DType::f32);
    TESSERA_CHECK(t.shape() == p->value.shape(), "load_parameters: parameter '", name,
                  "' has shape ", p->value.shape().str(), ", got ", t.shape().str());
    updates.emplace_back(p, std::move(t));
  }
  if (strict) {
    for (const auto& [k, v] : values) {
      std::string name = py::str(k);
      TESSERA_CHECK(known.count(name), "load_parameters: the module has no parameter '", name,
                    "' (pass strict=False to ignore it)");
    }
  }
  for (auto& [p, t] : updates) p->value.copy_from(t);  // in place: a Trainer's executors see it
}

std::string var_repr(const Var& v) {
  std::ostringstream s;
  s << "Var(" << v.shape().str() << ", " << dtype_name(v.dtype()) << ")";
  return s.str();
}

// Model names stored in checkpoints, matching `tessera train --model`.
std::string builtin_model_name(const Module& m) {
  if (dynamic_cast<const models::Mlp*>(&m)) return "mlp";
  if (dynamic_cast<const models::Cnn*>(&m)) return "cnn";
  if (dynamic_cast<const models::TransformerLm*>(&m)) return "transformer";
  return "";
}

void bind_var_and_trace(py::module_& m) {
  py::class_<Graph>(m, "Graph", "A traced graph: values and ops in execution order (core/graph.h)")
      .def("str", &Graph::str, "One line per op")
      .def("__str__", &Graph::str)
      .def_property_readonly("num_nodes", &Graph::num_nodes)
      .def_property_readonly("num_values", &Graph::num_values);

  auto ka =
      py::keep_alive<0, 1>();  // a result Var keeps its first operand (and so its trace) alive
  py::class_<Var>(m, "Var",
                  "A symbolic value in the graph being traced (valid while its trace lives)")
      .def_property_readonly("shape", [](const Var& v) { return shape_tuple(v.shape()); })
      .def_property_readonly("dtype", &Var::dtype)
      .def_property_readonly("id", &Var::id, "Value id in the graph")
      .def(
          "__add__", [](Var a, Var b) { return a + b; }, py::is_operator(), ka)
      .def(
          "__sub__", [](Var a, Var b) { return a - b; }, py::is_operator(), ka)
      .def(
          "__mul__", [](Var a, Var b) { return a * b; }, py::is_operator(), ka)
      .def(
          "__mul__", [](Var a, double s) { return a * s; }, py::is_operator(), ka)
      .def(
          "__rmul__", [](Var a, double s) { return a * s; }, py::is_operator(), ka)
      .def(
          "__truediv__", [](Var a, double s) { return a * (1.0 / s); }, py::is_operator(), ka)
      .def(
          "__neg__", [](Var a) { return a * -1.0; }, ka)
      .def(
          "__matmul__", [](Var a, Var b) { return nn::matmul(a, b); }, py::is_operator(), ka)
      .def("__repr__", &var_repr);

  py::class_<PyTrace>(m, "Trace", R"(Records one forward pass into a graph.

    with tessera.nn.Trace("bf16") as t:
        x = t.input("x", [64, 784])
        loss = tessera.nn.cross_entropy(net(x), t.input("y", [64], "i32"))
    print(t.graph())

Recording starts on entering the `with` block and stops on leaving it. Traces nest per thread.)")
      .def(py::init([](const std::string& precision) {
             return std::make_unique<PyTrace>(precision_from_name(precision));
           }),
           py::arg("precision") = "fp32")
      .def(
          "__enter__",
          [](PyTrace& t) -> PyTrace& {
            t.enter();
            return t;
          },
          py::return_value_policy::reference)
      .def("__exit__",
           [](PyTrace& t, py::args) {
             t.exit();
             return false;
           })
      .def(
          "input",
          [](PyTrace& t, const std::string& name, std::vector<int64_t> shape, py::handle dtype) {
            return t.active("input").input(name, Shape(shape), to_dtype(dtype));
          },
          py::arg("name"), py::arg("shape"), py::arg("dtype") = "f32", ka,
          "A graph input of the given shape and dtype")
      .def("graph", &PyTrace::graph, py::return_value_policy::reference_internal)
      .def_property_readonly(
          "precision", [](const PyTrace& t) { return std::string(precision_name(t.precision())); })
      .def_property_readonly("recording", &PyTrace::recording);

  m.def("relu", &nn::relu, py::arg("x"), ka);
  m.def("gelu", &nn::gelu, py::arg("x"), ka);
  m.def("flatten", &nn::flatten, py::arg("x"), ka, "[B, ...] -> [B, prod(...)]");
  m.def(
      "reshape",
      [](Var x, std::vector<int64_t> shape) {
        return nn::reshape(x, infer_shape(x.shape(), shape));
      },
      py::arg("x"), py::arg("shape"), ka, "One dimension may be -1");
  m.def("matmul", &nn::matmul, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, ka,
        "Uses the trace's precision (bf16 / cfp8 operands, f32 accumulation)");
  m.def("cross_entropy", &nn::cross_entropy, py::arg("logits"), py::arg("labels"), ka,
        "Mean softmax cross-entropy; labels i32 [B]");
  m.def("mse_loss", &nn::mse_loss, py::arg("pred"), py::arg("target"), ka);
}

void bind_modules(py::module_& m) {
  py::class_<Module, PyModule, std::shared_ptr<Module>>(m, "Module",
                                                        R"(Base of every layer and model.

Subclass it and write forward() on Vars; calling a module inside a Trace records its ops.
Assigning a module to a public attribute registers it (self.fc1 = nn.Linear(...)), as does
add_module, which also returns it:

    class Net(tessera.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = self.add_module("fc1", tessera.nn.Linear(784, 128, seed=1))
            self.fc2 = self.add_module("fc2", tessera.nn.Linear(128, 10, seed=2))
        def forward(self, x):
            return self.fc2(tessera.nn.relu(self.fc1(x)))

Parameters are named by path ("fc1.weight"): graph names and checkpoint keys.)")
      .def(py::init<>())
      .def(
          "__call__", [](py::handle self, Var x) { return checked(self)(x); }, py::arg("x"),
          py::keep_alive<0, 2>(),
          "Traces forward(x) under this module's scope (needs an active Trace)")
      .def(
          "forward", [](py::handle self, Var x) { return checked(self).forward(x); }, py::arg("x"),
          py::keep_alive<0, 2>())
      .def("__setattr__", &module_setattr)
      .def(
          "add_module",
          [](py::handle self, const std::string& name, py::object child) {
            python_module(self, "add_module").add_child(name, share_module(child));
            return child;
          },
          py::arg("name"), py::arg("module"), "Registers a child module; returns it")
      .def(
          "add_parameter",
          [](py::handle self, const std::string& name, const py::array& init) {
            python_module(self, "add_parameter")
                .add_parameter(name, from_numpy_as(init, DType::f32));
          },
          py::arg("name"), py::arg("init"),
          "Registers a trainable f32 parameter with initial values (copied)")
      .def(
          "param",
          [](py::handle self, const std::string& name) {
            return python_module(self, "param").param(name);
          },
          py::arg("name"), "The traced Var of a registered parameter (inside forward)")
      .def(
          "named_parameters", [](py::handle self) { return named_parameters(checked(self)); },
          "{path: numpy copy}, in registration order")
      .def(
          "load_parameters",
          [](py::handle self, const py::dict& values, bool strict) {
            load_parameters(checked(self), values, strict);
          },
          py::arg("values"), py::arg("strict") = true,
          "Sets parameters in place from {path: array}; strict: the names must match exactly")
      .def(
          "train",
          [](py::object self, bool mode) {
            checked(self).set_training(mode);
            return self;
          },
          py::arg("mode") = true,
          "Training mode (dropout on) for this module and its children; returns self")
      .def(
          "eval",
          [](py::object self) {
            checked(self).set_training(false);
            return self;
          },
          "Evaluation mode; returns self")
      .def_property_readonly("training", [](py::handle self) { return checked(self).training(); });

  // Built-in layers are final: their forward() is C++ and a Python override would not be seen.
  py::class_<nn::Linear, Module, std::shared_ptr<nn::Linear>>(m, "Linear", py::is_final(),
                                                              "y = x W + b, W stored [in, out]")
      .def(py::init<int64_t, int64_t, uint64_t, bool>(), py::arg("in_features"),
           py::arg("out_features"), py::kw_only(), py::arg("seed"), py::arg("bias") = true)
      .def_readonly("in_features", &nn::Linear::in_features)
      .def_readonly("out_features", &nn::Linear::out_features);
  py::class_<nn::Conv2d, Module, std::shared_ptr<nn::Conv2d>>(
      m, "Conv2d", py::is_final(), "NHWC convolution, weights [R, S, C, K]")
      .def(py::init<int64_t, int64_t, int64_t, uint64_t, int64_t, int64_t, int64_t, bool>(),
           py::arg("in_channels"), py::arg("out_channels"), py::arg("kernel"), py::kw_only(),
           py::arg("seed"), py::arg("stride") = 1, py::arg("padding") = 0, py::arg("dilation") = 1,
           py::arg("bias") = true);
  py::class_<nn::MaxPool2d, Module, std::shared_ptr<nn::MaxPool2d>>(m, "MaxPool2d", py::is_final())
      .def(py::init<int64_t, int64_t, int64_t>(), py::arg("window"), py::arg("stride") = 0,
           py::arg("padding") = 0, "stride 0: the window");
  py::class_<nn::AvgPool2d, Module, std::shared_ptr<nn::AvgPool2d>>(m, "AvgPool2d", py::is_final())
      .def(py::init<int64_t, int64_t, int64_t>(), py::arg("window"), py::arg("stride") = 0,
           py::arg("padding") = 0, "stride 0: the window");
  py::class_<nn::ReLU, Module, std::shared_ptr<nn::ReLU>>(m, "ReLU", py::is_final())
      .def(py::init<>());
  py::class_<nn::GELU, Module, std::shared_ptr<nn::GELU>>(m, "GELU", py::is_final())
      .def(py::init<>());
  py::class_<nn::Flatten, Module, std::shared_ptr<nn::Flatten>>(m, "Flatten", py::is_final())
      .def(py::init<>());
  py::class_<nn::LayerNorm, Module, std::shared_ptr<nn::LayerNorm>>(m, "LayerNorm", py::is_final(),
                                                                    "Over the last dimension")
      .def(py::init<int64_t, double>(), py::arg("dim"), py::arg("eps") = 1e-5);
  py::class_<nn::Embedding, Module, std::shared_ptr<nn::Embedding>>(
      m, "Embedding", py::is_final(), "i32 token ids [...] -> [..., dim]")
      .def(py::init<int64_t, int64_t, uint64_t>(), py::arg("vocab"), py::arg("dim"), py::kw_only(),
           py::arg("seed"))
      .def_readonly("vocab", &nn::Embedding::vocab)
      .def_readonly("dim", &nn::Embedding::dim);
  py::class_<nn::Dropout, Module, std::shared_ptr<nn::Dropout>>(m, "Dropout", py::is_final())
      .def(py::init<double>(), py::arg("p"));
  py::class_<nn::MultiHeadSelfAttention, Module, std::shared_ptr<nn::MultiHeadSelfAttention>>(
      m, "MultiHeadSelfAttention", py::is_final(), "On [B, T, D]")
      .def(py::init<int64_t, int64_t, bool, uint64_t, double>(), py::arg("dim"), py::arg("heads"),
           py::arg("causal") = true, py::kw_only(), py::arg("seed"), py::arg("dropout") = 0.0);
  py::class_<nn::TransformerBlock, Module, std::shared_ptr<nn::TransformerBlock>>(
      m, "TransformerBlock", py::is_final(), "Pre-norm: x + attn(ln1(x)), then x + mlp(ln2(x))")
      .def(py::init<int64_t, int64_t, uint64_t, int64_t, double>(), py::arg("dim"),
           py::arg("heads"), py::kw_only(), py::arg("seed"), py::arg("mlp_ratio") = 4,
           py::arg("dropout") = 0.0);
  py::class_<nn::Sequential, Module, std::shared_ptr<nn::Sequential>>(
      m, "Sequential", py::is_final(), "Sequential(m0, m1, ...); children named 0, 1, ...")
      .def(py::init([](py::args layers) {
        auto s = std::make_shared<nn::Sequential>();
        for (py::handle l : layers) s->add(share_module(l));
        return s;
      }))
      .def(
          "add",
          [](py::object self, py::object m) {
            self.cast<nn::Sequential&>().add(share_module(m));
            return self;
          },
          py::arg("module"), "Appends a module; returns self");
}

void bind_models(py::module_& m) {
  py::class_<models::Mlp, Module, std::shared_ptr<models::Mlp>>(
      m, "Mlp", py::is_final(), "in-hidden-hidden-classes with ReLU; flattens its input")
      .def(py::init<uint64_t, int64_t, int64_t, int64_t>(), py::arg("seed"),
           py::arg("in_features") = 784, py::arg("hidden") = 512, py::arg("classes") = 10);
  py::class_<models::Cnn, Module, std::shared_ptr<models::Cnn>>(
      m, "Cnn", py::is_final(), "Fashion-MNIST CNN on [B, 28, 28, 1]")
      .def(py::init<uint64_t>(), py::arg("seed"));
  py::class_<models::TransformerLm, Module, std::shared_ptr<models::TransformerLm>>(
      m, "TransformerLm", py::is_final(), "Causal LM: ids [B, seq] i32 -> logits [B * seq, vocab]")
      .def(py::init<int64_t, int64_t, int64_t, int64_t, int64_t, uint64_t>(), py::arg("vocab"),
           py::arg("seq"), py::arg("dim"), py::arg("heads"), py::arg("layers"), py::arg("seed"));
  m.def("make_model", &models::make_model, py::arg("name"), py::arg("seed") = 1,
        "'mlp', 'cnn' or 'transformer' (vocab 64, seq 32)");
  m.def("model_names", [] {
    std::vector<std::string> out;
    std::istringstream s(models::model_names());
    for (std::string name; std::getline(s >> std::ws, name, ',');) out.push_back(name);
    return out;
  });
}

}  // namespace

std::shared_ptr<nn::Module> share_module(py::handle obj) {
  Module* raw = &checked(obj);
  auto keep = std::make_unique<py::object>(py::reinterpret_borrow<py::object>(obj));
  std::shared_ptr<Module> out(raw, [k = keep.get()](Module*) {
    if (!Py_IsInitialized()) return;  // interpreter gone: nothing left to release
    py::gil_scoped_acquire gil;
    delete k;
  });
  (void)keep.release();  // owned by the deleter now
  return out;
}

std::string default_model_name(py::handle model) {
  std::string name = builtin_model_name(checked(model));
  return name.empty() ? py::type::handle_of(model).attr("__name__").cast<std::string>() : name;
}

void bind_nn(py::module_& m) {
  py::module_ nn_module =
      m.def_submodule("nn", "Symbolic values, traces, modules and layers (core/nn.h)");
  bind_var_and_trace(nn_module);
  bind_modules(nn_module);
  py::module_ models_module = m.def_submodule("models", "Built-in models (runtime/models.h)");
  bind_models(models_module);
}

}  // namespace tessera::python
