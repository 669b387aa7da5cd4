// The model-author API: subclass nn::Module, register parameters and submodules, and write
// forward() on symbolic values with ordinary C++. Calling a module inside a Trace records the
// graph (core/graph.h); nothing is computed until an executor runs it.
//
//   struct Mlp : nn::Module {
//     std::shared_ptr<nn::Linear> fc1, fc2;
//     Mlp() : fc1(add_module("fc1", std::make_shared<nn::Linear>(784, 512, /*seed=*/1))),
//             fc2(add_module("fc2", std::make_shared<nn::Linear>(512, 10, /*seed=*/2))) {}
//     nn::Var forward(nn::Var x) override { return (*fc2)(nn::relu((*fc1)(x))); }
//   };
//
//   nn::Trace trace(Precision::bf16);
//   nn::Var x = trace.input("x", {64, 784});
//   nn::Var loss = nn::cross_entropy(model(x), trace.input("y", {64}, DType::i32));
//
// Parameters own their f32 master values (Tensor) and are initialised as PyTorch does by default
// (Kaiming-uniform for Linear), from a seed. A module's parameters are named by their path
// ("fc1.weight"), which is also their graph name and their checkpoint key.
#pragma once

#include <tessera/core/graph.h>
#include <tessera/core/precision.h>
#include <tessera/core/tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace tessera::nn {

class Trace;

// A symbolic value in the graph being traced.
class Var {
 public:
  Var() = default;
  Var(Trace* t, int id) : trace_(t), id_(id) {}
  int id() const { return id_; }
  Trace* trace() const { return trace_; }
  const Shape& shape() const;
  DType dtype() const;
  bool defined() const { return trace_ != nullptr; }

 private:
  Trace* trace_ = nullptr;
  int id_ = -1;
};

struct Parameter {
  std::string name;  // full path, set when the module tree is walked
  Tensor value;      // f32 master weight
};

// Records one forward pass. Only one Trace may be active per thread at a time.
class Trace {
 public:
  explicit Trace(Precision precision = Precision::fp32);
  ~Trace();
  Trace(const Trace&) = delete;
  Trace& operator=(const Trace&) = delete;

  Var input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  Var apply1(const std::string& op, const std::vector<Var>& inputs, Attrs attrs = {});
  std::vector<Var> apply(const std::string& op, const std::vector<Var>& inputs, Attrs attrs = {});
  Var param(Parameter& p);  // adds p once per trace
  // Stops recording (the next Trace on this thread no longer nests in this one); the graph and
  // parameter map stay available. Called by the destructor if not before.
  void finish();

  Graph& graph() { return graph_; }
  Precision precision() const { return precision_; }
  // Graph value id -> the Parameter it was traced from.
  const std::map<int, Parameter*>& params() const { return params_; }
  std::string scope() const;

  static Trace& current();  // ValueError outside a trace

 private:
  friend class Module;
  Graph graph_;
  Precision precision_;
  std::vector<std::string> scope_;
  std::map<Parameter*, int> ids_;
  std::map<int, Parameter*> params_;
  Trace* previous_;
  bool finished_ = false;
};

class Module {
 public:
  virtual ~Module() = default;
  virtual Var forward(Var x) = 0;
  Var operator()(Var x);  // traces forward() under this module's scope

  // Every parameter below this module, by full path ("block.0.fc.weight").
  std::vector<std::pair<std::string, Parameter*>> named_parameters();
  void set_training(bool training);
  bool training() const { return training_; }

 protected:
  Parameter& add_parameter(const std::string& name, Tensor init);
  template <typename M>
  std::shared_ptr<M> add_module(const std::string& name, std::shared_ptr<M> m) {
    children_.emplace_back(name, m);
    return m;
  }
  Var param(const std::string& name);  // the traced value of a registered parameter

 private:
  void collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out);
  std::vector<std::pair<std::string, std::unique_ptr<Parameter>>> params_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  std::string scope_name_;  // path set by the parent when called
  bool training_ = true;
};

// ---- functions on Vars ----
Var operator+(Var a, Var b);
Var operator-(Var a, Var b);
Var operator*(Var a, Var b);
Var operator*(Var a, double s);
Var matmul(Var a, Var b, bool trans_a = false, bool trans_b = false);  // uses the trace's precision
Var relu(Var x);
Var gelu(Var x);
Var flatten(Var x);                      // [B, ...] -> [B, prod(...)]
Var reshape(Var x, const Shape& shape);
Var cross_entropy(Var logits, Var labels);  // mean softmax cross-entropy, labels i32 [B]
Var mse_loss(Var pred, Var target);

// ---- layers ----
// y = x W + b with W stored [in, out]; x may have leading dims ([..., in] -> [..., out]). Init as torch.nn.Linear: W, b ~ U(-1/sqrt(in), 1/sqrt(in)).
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, uint64_t seed, bool bias = true);
  Var forward(Var x) override;
  int64_t in_features, out_features;

 private:
  bool has_bias_;
};

// NHWC convolution with weights [R, S, C, K]. Init as torch.nn.Conv2d: W, b ~ U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)) with fan_in = C * R * S.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, uint64_t seed, int64_t stride = 1,
         int64_t padding = 0, int64_t dilation = 1, bool bias = true);
  Var forward(Var x) override;
  int64_t in_channels, out_channels, kernel, stride, padding, dilation;

 private:
  bool has_bias_;
};

class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(int64_t window, int64_t stride = 0, int64_t padding = 0)
      : window_(window), stride_(stride ? stride : window), padding_(padding) {}
  Var forward(Var x) override;

 private:
  int64_t window_, stride_, padding_;
};

class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(int64_t window, int64_t stride = 0, int64_t padding = 0)
      : window_(window), stride_(stride ? stride : window), padding_(padding) {}
  Var forward(Var x) override;

 private:
  int64_t window_, stride_, padding_;
};

// Layer normalization over the last dimension (gamma = 1, beta = 0 initially, eps 1e-5).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, double eps = 1e-5);
  Var forward(Var x) override;

 private:
  int64_t dim_;
  double eps_;
};

// Token ids (i32, any shape) -> vectors [..., dim]; init N(0, 1) as torch.nn.Embedding.
class Embedding : public Module {
 public:
  Embedding(int64_t vocab, int64_t dim, uint64_t seed);
  Var forward(Var ids) override;
  int64_t vocab, dim;
};

// Zeroes elements with probability p while training (scaling the rest by 1 / (1 - p)); the
// identity in evaluation.
class Dropout : public Module {
 public:
  explicit Dropout(double p) : p_(p) {}
  Var forward(Var x) override;

 private:
  double p_;
};

// Multi-head self-attention on [B, T, D] with an optional causal mask.
class MultiHeadSelfAttention : public Module {
 public:
  MultiHeadSelfAttention(int64_t dim, int64_t heads, bool causal, uint64_t seed, double dropout = 0.0);
  Var forward(Var x) override;

 private:
  int64_t dim_, heads_;
  bool causal_;
  std::shared_ptr<class Linear> qkv_, proj_;
  std::shared_ptr<Dropout> drop_;
};

// Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x)) with a GELU MLP of
// width mlp_ratio * dim.
class TransformerBlock : public Module {
 public:
  TransformerBlock(int64_t dim, int64_t heads, uint64_t seed, int64_t mlp_ratio = 4, double dropout = 0.0);
  Var forward(Var x) override;

 private:
  std::shared_ptr<LayerNorm> ln1_, ln2_;
  std::shared_ptr<MultiHeadSelfAttention> attn_;
  std::shared_ptr<class Linear> fc1_, fc2_;
  std::shared_ptr<Dropout> drop_;
};

class ReLU : public Module {
 public:
  Var forward(Var x) override { return relu(x); }
};
class GELU : public Module {
 public:
  Var forward(Var x) override { return gelu(x); }
};
class Flatten : public Module {
 public:
  Var forward(Var x) override { return flatten(x); }
};

class Sequential : public Module {
 public:
  Sequential& add(std::shared_ptr<Module> m);
  Var forward(Var x) override;

 private:
  std::vector<std::shared_ptr<Module>> layers_;
};

}  // namespace tessera::nn
