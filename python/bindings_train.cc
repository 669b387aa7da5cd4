// tessera.Dataset, the data sources and tessera.Trainer (core/data.h, runtime/trainer.h).
//
// The GIL is released while the Trainer runs steps (fit, step, evaluate, checkpoints): executors
// never call Python. The one way back into Python is tracing a Python-subclassed module, which
// evaluate() may do lazily for a new batch size; PyModule::forward takes the GIL for that.
// A Trainer is not thread-safe: one call at a time, and leave its model alone meanwhile.
#include "bindings.h"

#include <tessera/runtime/trainer.h>

#include <pybind11/stl.h>

#include <functional>
#include <ostream>
#include <streambuf>
#include <string>
#include <vector>

namespace tessera::python {

namespace {

// Forwards whole lines to Python's sys.stdout, taking the GIL, so fit()'s epoch lines appear as
// they happen (in notebooks and under pytest's capture too) while fit runs without the GIL.
class PyStdoutBuf : public std::streambuf {
 public:
  explicit PyStdoutBuf(bool enabled) : enabled_(enabled) {}
  ~PyStdoutBuf() override { sync(); }

 protected:
  int overflow(int c) override {
    if (c != traits_type::eof()) {
      pending_ += static_cast<char>(c);
      if (c == '\n') sync();
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    pending_.append(s, static_cast<size_t>(n));
    return n;
  }
  int sync() override {
    if (pending_.empty()) return 0;
    std::string text;
    text.swap(pending_);
    if (!enabled_) return 0;
    py::gil_scoped_acquire gil;
    try {
      py::object out = py::module_::import("sys").attr("stdout");
      out.attr("write")(text);
      out.attr("flush")();
    } catch (py::error_already_set&) {
      // stdout closed or replaced by something without write(): drop the log, keep training.
    }
    return 0;
  }

 private:
  bool enabled_;
  std::string pending_;
};

// ---- datasets ----

bool is_integer(const py::array& a) {
  char kind = a.dtype().kind();
  return kind == 'i' || kind == 'u' || kind == 'b';
}

// Labels and token ids are converted to int32, but never from floats (that would truncate).
Tensor integers(const py::array& a, const char* what) {
  TESSERA_CHECK_AS(TypeError, is_integer(a), what, " must be an integer array, got numpy dtype '",
                   py::str(a.dtype()).cast<std::string>(), "'");
  return from_numpy_as(a, DType::i32);
}

Dataset make_dataset(const py::array& x, const py::array& y, int64_t num_classes) {
  Dataset d;
  d.x = is_integer(x) ? from_numpy_as(x, DType::i32) : from_numpy_as(x, DType::f32);
  d.y = integers(y, "Dataset: labels y");
  TESSERA_CHECK(d.x.ndim() >= 1 && d.y.ndim() >= 1 && d.x.size(0) == d.y.size(0), "Dataset: x ",
                d.x.shape().str(), " and y ", d.y.shape().str(),
                " must have the same first (example) dimension");
  const int32_t* l = d.y.data<int32_t>();
  int32_t lo = 0, hi = -1;
  for (int64_t i = 0; i < d.y.numel(); ++i) {
    lo = std::min(lo, l[i]);
    hi = std::max(hi, l[i]);
  }
  TESSERA_CHECK(lo >= 0, "Dataset: labels must be >= 0, got ", lo);
  if (num_classes <= 0) num_classes = hi + 1;
  TESSERA_CHECK(hi < num_classes, "Dataset: label ", hi, " is out of range for ", num_classes,
                " classes");
  d.num_classes = num_classes;
  return d;
}

Split split_from_name(const std::string& s) {
  if (s == "train") return Split::train;
  if (s == "test") return Split::test;
  TESSERA_THROW(ValueError, "unknown split '", s, "' (known: train, test)");
}

// ---- Trainer options: keyword arguments mirroring TrainOptions, one table for parse and dump ----

struct OptionField {
  const char* name;
  const char* type;  // for error messages
  std::function<py::object(const TrainOptions&)> get;
  std::function<void(TrainOptions&, py::handle)> set;
};

// ref(o) is the field in o (const or not), read by get and assigned by set.
template <typename T, typename Ref>
OptionField plain(const char* name, const char* type, Ref ref) {
  return {name, type, [ref](const TrainOptions& o) { return py::cast(ref(o)); },
          [ref](TrainOptions& o, py::handle h) { ref(o) = h.cast<T>(); }};
}

#define TESSERA_OPTION(T, type, name, expr) \
  plain<T>(                                 \
      name, type, [](auto& o) -> auto& { return expr; })

const std::vector<OptionField>& option_fields() {
  static const std::vector<OptionField> fields = {
      TESSERA_OPTION(std::string, "str", "name", o.model),
      {"precision", "str",
       [](const TrainOptions& o) { return py::cast(std::string(precision_name(o.precision))); },
       [](TrainOptions& o, py::handle h) {
         o.precision = precision_from_name(h.cast<std::string>());
       }},
      TESSERA_OPTION(int64_t, "int", "epochs", o.epochs),
      TESSERA_OPTION(int64_t, "int", "batch_size", o.batch_size),
      TESSERA_OPTION(std::string, "str", "optimizer", o.optimizer),
      TESSERA_OPTION(double, "float", "lr", o.opt.lr),
      TESSERA_OPTION(double, "float", "momentum", o.opt.momentum),
      TESSERA_OPTION(bool, "bool", "nesterov", o.opt.nesterov),
      TESSERA_OPTION(double, "float", "weight_decay", o.opt.weight_decay),
      TESSERA_OPTION(double, "float", "beta1", o.opt.beta1),
      TESSERA_OPTION(double, "float", "beta2", o.opt.beta2),
      TESSERA_OPTION(double, "float", "eps", o.opt.eps),
      TESSERA_OPTION(std::string, "str", "schedule", o.schedule),
      TESSERA_OPTION(int64_t, "int", "warmup_steps", o.warmup_steps),
      TESSERA_OPTION(double, "float", "clip_norm", o.clip_norm),
      TESSERA_OPTION(uint64_t, "int", "seed", o.seed),
      TESSERA_OPTION(std::string, "str", "checkpoint_dir", o.checkpoint_dir),
      TESSERA_OPTION(bool, "bool", "resume", o.resume),
      TESSERA_OPTION(std::string, "str", "metrics_path", o.metrics_path),
      TESSERA_OPTION(int64_t, "int", "eval_batch", o.eval_batch),
      TESSERA_OPTION(int64_t, "int", "max_steps", o.max_steps),
      TESSERA_OPTION(bool, "bool", "progress", o.progress),
      {"input_dtype", "str",
       [](const TrainOptions& o) { return py::cast(std::string(dtype_name(o.input_dtype))); },
       [](TrainOptions& o, py::handle h) { o.input_dtype = to_dtype(h); }},
      TESSERA_OPTION(std::vector<int64_t>, "list of int", "label_shape", o.label_shape),
      TESSERA_OPTION(bool, "bool", "loss_scaling", o.loss_scaling),
      // Data parallelism emulated in this process: every node hosted here, gradients averaged
      // (no GradientSync); batch_size is per node, step() takes batch_size * world_nodes rows.
      {"world_nodes", "int", [](const TrainOptions& o) { return py::cast(o.world_nodes); },
       [](TrainOptions& o, py::handle h) {
         int n = h.cast<int>();
         TESSERA_CHECK(n >= 1, "Trainer: world_nodes ", n, " must be >= 1");
         o.world_nodes = n;
         o.hosted_nodes.resize(static_cast<size_t>(n));
         for (int i = 0; i < n; ++i) o.hosted_nodes[static_cast<size_t>(i)] = i;
       }},
      {"cfp8_rounding", "str",
       [](const TrainOptions& o) {
         return py::cast(
             std::string(o.cfp8.rounding == Rounding::stochastic ? "stochastic" : "nearest"));
       },
       [](TrainOptions& o, py::handle h) { o.cfp8.rounding = to_rounding(h.cast<std::string>()); }},
      TESSERA_OPTION(int, "int", "cfp8_history", o.cfp8.history),
      TESSERA_OPTION(int, "int", "cfp8_margin", o.cfp8.margin),
  };
  return fields;
}

#undef TESSERA_OPTION

std::string option_names() {
  std::string s;
  for (const auto& f : option_fields()) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

TrainOptions parse_options(const py::kwargs& kw, py::handle model) {
  TrainOptions o;
  o.model = default_model_name(model);
  for (const auto& [key, value] : kw) {
    std::string name = py::str(key);
    const OptionField* field = nullptr;
    for (const auto& f : option_fields()) {
      if (name == f.name) field = &f;
    }
    TESSERA_CHECK_AS(TypeError, field != nullptr, "Trainer: unknown option '", name,
                     "' (known: ", option_names(), ")");
    try {
      field->set(o, value);
    } catch (const py::cast_error&) {
      TESSERA_THROW(TypeError, "Trainer: option '", name, "' expects ", field->type, ", got ",
                    py::repr(value).cast<std::string>(), " (",
                    py::type::handle_of(value).attr("__name__").cast<std::string>(), ")");
    }
  }
  return o;
}

py::dict options_dict(const TrainOptions& o) {
  py::dict d;
  for (const auto& f : option_fields()) d[f.name] = f.get(o);
  return d;
}

py::dict report_dict(const EpochReport& r) {
  py::dict d;
  d["epoch"] = r.epoch;
  d["train_loss"] = r.train_loss;
  d["test_accuracy"] = r.test_accuracy;
  d["seconds"] = r.seconds;
  d["images_per_s"] = r.images_per_s;
  return d;
}

const char* kTrainerDoc =
    R"(Trains a model on one node: trace, backward, precision policy, optimizer, checkpoints.

    trainer = tessera.Trainer(net, [784], 10, precision="bf16", epochs=3, lr=0.05)
    reports = trainer.fit(train, test)      # [{'epoch': 1, 'train_loss': ..., 'test_accuracy': ...}]
    trainer.step(x, y)                      # one step on numpy arrays of exactly batch_size rows

example_shape is one example's shape (no batch dimension); the model must map
[batch_size, *example_shape] to [labels per batch, classes]. Options are keywords mirroring
TrainOptions (runtime/trainer.h); `options` shows them all with their values. The model is traced
when the Trainer is built; later changes to the module tree are not seen.)";

void bind_dataset(py::module_& m) {
  py::class_<Dataset>(
      m, "Dataset",
      R"(Examples x [N, ...] (float32, or int32 token ids) and labels y [N] or [N, ...] int32.

x and y read back as read-only numpy views; num_classes defaults to max(y) + 1.)")
      .def(py::init(&make_dataset), py::arg("x"), py::arg("y"), py::arg("num_classes") = 0)
      .def_property_readonly("x", [](const Dataset& d) { return numpy_view(d.x); })
      .def_property_readonly("y", [](const Dataset& d) { return numpy_view(d.y); })
      .def_readonly("num_classes", &Dataset::num_classes)
      .def("__len__", &Dataset::size)
      .def("__repr__", [](const Dataset& d) {
        return "Dataset(x " + d.x.shape().str() + " " + dtype_name(d.x.dtype()) + ", y " +
               d.y.shape().str() + ", " + std::to_string(d.num_classes) + " classes)";
      });

  m.attr("FASHION_MNIST_DIR") = kFashionMnistDir;
  m.def(
      "load_fashion_mnist",
      [](const std::string& dir, const std::string& split) {
        Split s = split_from_name(split);
        py::gil_scoped_release nogil;
        return load_fashion_mnist(dir, s);
      },
      py::arg("dir") = kFashionMnistDir, py::arg("split") = "train",
      "Images [N, 28, 28, 1] standardized, labels [N]; OSError naming a missing or corrupted file");
  m.def("make_synthetic_classification", &make_synthetic_classification, py::arg("n"),
        py::arg("features"), py::arg("classes"), py::arg("seed") = 0, py::arg("spread") = 0.5,
        "Gaussian blobs: x [n, features] float32, y [n]");
  m.def("make_synthetic_sequences", &make_synthetic_sequences, py::arg("n"), py::arg("seq"),
        py::arg("vocab"), py::arg("seed") = 0,
        "Repeating motifs: x [n, seq] int32 ids, y [n, seq] next-token targets");
}

void bind_trainer(py::module_& m) {
  py::class_<Trainer>(m, "Trainer", kTrainerDoc)
      .def(py::init([](py::object model, std::vector<int64_t> example_shape, int64_t classes,
                       py::kwargs kw) {
             std::shared_ptr<nn::Module> shared =
                 share_module(model);  // TypeError for a non-module first
             TrainOptions o = parse_options(kw, model);
             // Traces the model: a Python forward() runs here, with the GIL held.
             return std::make_unique<Trainer>(std::move(shared), Shape(example_shape), classes,
                                              std::move(o));
           }),
           py::arg("model"), py::arg("example_shape"), py::arg("classes"))
      .def(
          "fit",
          [](Trainer& t, const Dataset& train, const Dataset& test, bool log) {
            PyStdoutBuf buf(log);
            std::ostream out(&buf);
            std::vector<EpochReport> reports;
            {
              py::gil_scoped_release nogil;
              reports = t.fit(train, test, out);
            }
            out.flush();
            py::list l;
            for (const auto& r : reports) l.append(report_dict(r));
            return l;
          },
          py::arg("train"), py::arg("test"), py::arg("log") = true,
          "Trains for `epochs` (or max_steps), evaluating after each epoch; returns one dict per "
          "epoch.\n"
          "log: print the epoch lines to sys.stdout (the progress bar, option `progress`, goes to "
          "stderr).")
      .def(
          "step",
          [](Trainer& t, const py::array& x, const py::array& y) {
            Batch b;
            b.x = t.options().input_dtype == DType::i32 ? integers(x, "step: token ids x")
                                                        : from_numpy_as(x, t.options().input_dtype);
            b.y = integers(y, "step: labels y");
            py::gil_scoped_release nogil;
            return t.step(b);
          },
          py::arg("x"), py::arg("y"),
          "One optimizer step on exactly batch_size examples; returns the loss")
      .def(
          "evaluate",
          [](Trainer& t, const Dataset& d) {
            py::gil_scoped_release nogil;
            return t.evaluate(d);
          },
          py::arg("dataset"), "Accuracy in [0, 1] over every label")
      .def(
          "save_checkpoint",
          [](const Trainer& t, const std::string& dir) {
            py::gil_scoped_release nogil;
            t.save_checkpoint(dir);
          },
          py::arg("dir"))
      .def(
          "load_checkpoint",
          [](Trainer& t, const std::string& dir) {
            py::gil_scoped_release nogil;
            t.load_checkpoint(dir);
          },
          py::arg("dir"),
          "Parameters, optimizer state, loss scale, cfp8 histories, step and data position")
      .def_property_readonly("global_step", &Trainer::global_step)
      .def_property_readonly("skipped_steps", &Trainer::skipped_steps,
                             "Steps skipped for Inf/NaN gradients")
      .def_property_readonly("loss_scale", [](const Trainer& t) { return t.loss_scaler().scale(); })
      .def_property_readonly("options", [](const Trainer& t) { return options_dict(t.options()); })
      .def(
          "named_parameters",
          [](const Trainer& t) {
            py::dict d;
            for (const auto& [name, p] : t.parameters()) d[py::str(name)] = to_numpy(p->value);
            return d;
          },
          "{path: numpy copy} of the trained parameters")
      .def("train_graph", &Trainer::train_graph, py::return_value_policy::reference_internal,
           "Forward + backward graph of one training step")
      .def(
          "stats_table", [](const Trainer& t) { return t.train_executor().stats_table(); },
          "Time, calls and FLOP rate per op kind over the training steps run so far");
}

}  // namespace

void bind_train(py::module_& m) {
  bind_dataset(m);
  bind_trainer(m);
}

}  // namespace tessera::python
