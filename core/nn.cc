#include <tessera/core/nn.h>

#include <tessera/core/random.h>

#include <cmath>

namespace tessera::nn {

namespace {
thread_local Trace* g_current = nullptr;
}

const Shape& Var::shape() const { return trace_->graph().value(id_).shape; }
DType Var::dtype() const { return trace_->graph().value(id_).dtype; }

Trace::Trace(Precision precision) : precision_(precision), previous_(g_current) { g_current = this; }
Trace::~Trace() { finish(); }

void Trace::finish() {
  if (finished_) return;
  TESSERA_INTERNAL_ASSERT(g_current == this, "nn::Trace objects must finish in reverse order of creation");
  g_current = previous_;
  finished_ = true;
}

Trace& Trace::current() {
  TESSERA_CHECK(g_current != nullptr && !g_current->finished_, "no active nn::Trace: create one before calling a module");
  return *g_current;
}

std::string Trace::scope() const {
  std::string s;
  for (const auto& part : scope_) {
    if (part.empty()) continue;
    s += (s.empty() ? "" : ".") + part;
  }
  return s;
}

Var Trace::input(const std::string& name, const Shape& shape, DType dtype) {
  return Var(this, graph_.input(name, shape, dtype));
}

std::vector<Var> Trace::apply(const std::string& op, const std::vector<Var>& inputs, Attrs attrs) {
  std::vector<int> ids;
  for (const Var& v : inputs) {
    TESSERA_CHECK(v.trace() == this, op, ": input value belongs to another trace (or is undefined)");
    ids.push_back(v.id());
  }
  std::vector<Var> out;
  for (int id : graph_.apply(op, ids, std::move(attrs), scope())) out.emplace_back(this, id);
  return out;
}

Var Trace::apply1(const std::string& op, const std::vector<Var>& inputs, Attrs attrs) {
  auto out = apply(op, inputs, std::move(attrs));
  TESSERA_INTERNAL_ASSERT(out.size() == 1, op, " has ", out.size(), " outputs");
  return out[0];
}

Var Trace::param(Parameter& p) {
  auto it = ids_.find(&p);
  if (it != ids_.end()) return Var(this, it->second);
  std::string name = p.name.empty() ? scope() : p.name;
  int id = graph_.param(name, p.value.shape());
  ids_[&p] = id;
  params_[id] = &p;
  return Var(this, id);
}

// ---- Module ----

Var Module::operator()(Var x) {
  Trace& t = Trace::current();
  if (t.scope_.empty()) named_parameters();  // the root call names every parameter by path
  t.scope_.push_back(scope_name_);
  struct Pop {
    Trace& t;
    ~Pop() { t.scope_.pop_back(); }
  } pop{t};
  return forward(x);
}

Parameter& Module::add_parameter(const std::string& name, Tensor init) {
  TESSERA_CHECK(init.dtype() == DType::f32, "parameter '", name, "' must be f32, got ", dtype_name(init.dtype()));
  for (const auto& [n, p] : params_) TESSERA_CHECK(n != name, "parameter '", name, "' registered twice");
  params_.emplace_back(name, std::make_unique<Parameter>(Parameter{name, init.contiguous()}));
  return *params_.back().second;
}

Var Module::param(const std::string& name) {
  for (auto& [n, p] : params_) {
    if (n == name) return Trace::current().param(*p);
  }
  TESSERA_THROW(ValueError, "module has no parameter '", name, "'");
}

void Module::collect(const std::string& prefix, std::vector<std::pair<std::string, Parameter*>>& out) {
  for (auto& [n, p] : params_) {
    p->name = prefix.empty() ? n : prefix + "." + n;
    out.emplace_back(p->name, p.get());
  }
  for (auto& [n, m] : children_) {
    m->scope_name_ = n;
    m->collect(prefix.empty() ? n : prefix + "." + n, out);
  }
}

std::vector<std::pair<std::string, Parameter*>> Module::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> out;
  collect("", out);
  return out;
}

void Module::set_training(bool training) {
  training_ = training;
  for (auto& [n, m] : children_) m->set_training(training);
}

// ---- functions ----

namespace {
Trace& trace_of(const Var& v) {
  TESSERA_CHECK(v.defined(), "operation on an undefined nn::Var");
  return *v.trace();
}
}  // namespace

Var operator+(Var a, Var b) { return trace_of(a).apply1("add", {a, b}); }
Var operator-(Var a, Var b) { return trace_of(a).apply1("sub", {a, b}); }
Var operator*(Var a, Var b) { return trace_of(a).apply1("mul", {a, b}); }
Var operator*(Var a, double s) { return trace_of(a).apply1("scale", {a}, {{"alpha", s}}); }

Var matmul(Var a, Var b, bool trans_a, bool trans_b) {
  Trace& t = trace_of(a);
  return t.apply1("matmul", {a, b},
                  {{"trans_a", int64_t{trans_a}}, {"trans_b", int64_t{trans_b}},
                   {"precision", std::string(precision_name(t.precision()))}});
}
Var relu(Var x) { return trace_of(x).apply1("relu", {x}); }
Var gelu(Var x) { return trace_of(x).apply1("gelu", {x}); }
Var reshape(Var x, const Shape& shape) { return trace_of(x).apply1("reshape", {x}, {{"shape", shape.dims()}}); }
Var flatten(Var x) {
  const Shape& s = x.shape();
  TESSERA_CHECK(s.ndim() >= 1, "flatten: needs a batch dimension, got shape ", s.str());
  return reshape(x, Shape{s[0], s[0] ? s.numel() / s[0] : 0});
}
Var cross_entropy(Var logits, Var labels) { return trace_of(logits).apply("softmax_xent", {logits, labels})[0]; }
Var mse_loss(Var pred, Var target) { return trace_of(pred).apply1("mse", {pred, target}); }

// ---- layers ----

Linear::Linear(int64_t in, int64_t out, uint64_t seed, bool bias)
    : in_features(in), out_features(out), has_bias_(bias) {
  TESSERA_CHECK(in > 0 && out > 0, "Linear(", in, ", ", out, "): feature counts must be positive");
  double bound = 1.0 / std::sqrt(static_cast<double>(in));
  add_parameter("weight", Tensor::uniform({in, out}, -bound, bound, seed));
  if (bias) add_parameter("bias", Tensor::uniform({out}, -bound, bound, splitmix64(seed ^ 0xb1a5)));
}

Var Linear::forward(Var x) {
  Trace& t = trace_of(x);
  const Shape s = x.shape();
  if (s.ndim() < 2 || s[-1] != in_features) {
    TESSERA_THROW(ValueError, "Linear layer '", t.scope(), "' expects input [batch, ", in_features, "], got ",
                  s.str());
  }
  Var flat = s.ndim() == 2 ? x : reshape(x, Shape{s.numel() / in_features, in_features});
  Var y = matmul(flat, param("weight"));
  if (has_bias_) y = t.apply1("bias_add", {y, param("bias")});
  if (s.ndim() == 2) return y;
  std::vector<int64_t> out = s.dims();
  out.back() = out_features;
  return reshape(y, Shape(out));
}

LayerNorm::LayerNorm(int64_t dim, double eps) : dim_(dim), eps_(eps) {
  TESSERA_CHECK(dim > 0 && eps > 0, "LayerNorm(", dim, ", eps ", eps, "): bad arguments");
  add_parameter("weight", Tensor::full({dim}, 1.0));
  add_parameter("bias", Tensor::zeros({dim}));
}

Var LayerNorm::forward(Var x) {
  Trace& t = trace_of(x);
  if (x.shape().ndim() < 1 || x.shape()[-1] != dim_) {
    TESSERA_THROW(ValueError, "LayerNorm layer '", t.scope(), "' expects last dimension ", dim_, ", got ", x.shape().str());
  }
  return t.apply("layer_norm", {x, param("weight"), param("bias")}, {{"eps", eps_}})[0];
}

Embedding::Embedding(int64_t v, int64_t d, uint64_t seed) : vocab(v), dim(d) {
  TESSERA_CHECK(v > 0 && d > 0, "Embedding(", v, ", ", d, "): sizes must be positive");
  add_parameter("weight", Tensor::normal({v, d}, 0.0, 1.0, seed));
}

Var Embedding::forward(Var ids) {
  Trace& t = trace_of(ids);
  if (ids.dtype() != DType::i32) {
    TESSERA_THROW(TypeError, "Embedding layer '", t.scope(), "' expects i32 token ids, got ", dtype_name(ids.dtype()));
  }
  return t.apply1("embedding", {param("weight"), ids});
}

Var Dropout::forward(Var x) {
  if (p_ == 0) return x;
  return trace_of(x).apply("dropout", {x}, {{"p", p_}})[0];
}

MultiHeadSelfAttention::MultiHeadSelfAttention(int64_t dim, int64_t heads, bool causal, uint64_t seed, double dropout)
    : dim_(dim), heads_(heads), causal_(causal) {
  TESSERA_CHECK(dim > 0 && heads > 0 && dim % heads == 0, "MultiHeadSelfAttention: dim ", dim,
                " must be a positive multiple of heads ", heads);
  qkv_ = add_module("qkv", std::make_shared<Linear>(dim, 3 * dim, splitmix64(seed + 1)));
  proj_ = add_module("proj", std::make_shared<Linear>(dim, dim, splitmix64(seed + 2)));
  drop_ = add_module("drop", std::make_shared<Dropout>(dropout));
}

Var MultiHeadSelfAttention::forward(Var x) {
  Trace& t = trace_of(x);
  const Shape s = x.shape();
  if (s.ndim() != 3 || s[2] != dim_) {
    TESSERA_THROW(ValueError, "attention layer '", t.scope(), "' expects [batch, seq, ", dim_, "], got ", s.str());
  }
  const int64_t B = s[0], T = s[1], H = heads_, dh = dim_ / heads_;
  Var qkv = reshape((*qkv_)(x), Shape{B, T, 3, H, dh});
  // [3, B, H, T, dh]: q, k, v each [B*H, T, dh].
  Var split = t.apply1("permute", {qkv}, {{"order", std::vector<int64_t>{2, 0, 3, 1, 4}}});
  Var flat = reshape(split, Shape{3, B * H * T * dh});
  auto part = [&](int64_t i) {
    Var one = t.apply1("slice_rows", {flat}, {{"start", i}, {"end", i + 1}});
    return reshape(one, Shape{B * H, T, dh});
  };
  Var q = part(0), k = part(1), v = part(2);
  Var scores = t.apply1("bmm", {q, k}, {{"trans_b", int64_t{1}}, {"alpha", 1.0 / std::sqrt(static_cast<double>(dh))}});
  if (causal_) scores = t.apply1("causal_mask", {scores});
  Var p = (*drop_)(t.apply1("softmax", {scores}));
  Var o = t.apply1("bmm", {p, v});  // [B*H, T, dh]
  Var merged = t.apply1("permute", {reshape(o, Shape{B, H, T, dh})}, {{"order", std::vector<int64_t>{0, 2, 1, 3}}});
  return (*proj_)(reshape(merged, Shape{B, T, dim_}));
}

TransformerBlock::TransformerBlock(int64_t dim, int64_t heads, uint64_t seed, int64_t mlp_ratio, double dropout) {
  ln1_ = add_module("ln1", std::make_shared<LayerNorm>(dim));
  attn_ = add_module("attn", std::make_shared<MultiHeadSelfAttention>(dim, heads, true, splitmix64(seed + 1), dropout));
  ln2_ = add_module("ln2", std::make_shared<LayerNorm>(dim));
  fc1_ = add_module("fc1", std::make_shared<Linear>(dim, mlp_ratio * dim, splitmix64(seed + 2)));
  fc2_ = add_module("fc2", std::make_shared<Linear>(mlp_ratio * dim, dim, splitmix64(seed + 3)));
  drop_ = add_module("drop", std::make_shared<Dropout>(dropout));
}

Var TransformerBlock::forward(Var x) {
  x = x + (*attn_)((*ln1_)(x));
  return x + (*drop_)((*fc2_)(gelu((*fc1_)((*ln2_)(x)))));
}

Conv2d::Conv2d(int64_t in, int64_t out, int64_t k, uint64_t seed, int64_t stride_, int64_t padding_,
               int64_t dilation_, bool bias)
    : in_channels(in), out_channels(out), kernel(k), stride(stride_), padding(padding_), dilation(dilation_),
      has_bias_(bias) {
  TESSERA_CHECK(in > 0 && out > 0 && k > 0 && stride_ > 0 && padding_ >= 0 && dilation_ > 0, "Conv2d(", in, ", ",
                out, ", kernel ", k, ", stride ", stride_, ", padding ", padding_, ", dilation ", dilation_,
                "): bad arguments");
  double bound = 1.0 / std::sqrt(static_cast<double>(in * k * k));
  add_parameter("weight", Tensor::uniform({k, k, in, out}, -bound, bound, seed));
  if (bias) add_parameter("bias", Tensor::uniform({out}, -bound, bound, splitmix64(seed ^ 0xb1a5)));
}

Var Conv2d::forward(Var x) {
  Trace& t = trace_of(x);
  const Shape& s = x.shape();
  if (s.ndim() != 4 || s[3] != in_channels) {
    TESSERA_THROW(ValueError, "Conv2d layer '", t.scope(), "' expects NHWC input with ", in_channels,
                  " channels, got ", s.str());
  }
  std::vector<Var> ins{x, param("weight")};
  if (has_bias_) ins.push_back(param("bias"));
  return t.apply1("conv2d", ins,
                  {{"stride", std::vector<int64_t>{stride, stride}},
                   {"pad", std::vector<int64_t>{padding, padding}},
                   {"dilation", std::vector<int64_t>{dilation, dilation}},
                   {"precision", std::string(precision_name(t.precision()))}});
}

Var MaxPool2d::forward(Var x) {
  return trace_of(x).apply("maxpool2d", {x},
                           {{"window", std::vector<int64_t>{window_, window_}},
                            {"stride", std::vector<int64_t>{stride_, stride_}},
                            {"pad", std::vector<int64_t>{padding_, padding_}}})[0];
}

Var AvgPool2d::forward(Var x) {
  return trace_of(x).apply1("avgpool2d", {x},
                            {{"window", std::vector<int64_t>{window_, window_}},
                             {"stride", std::vector<int64_t>{stride_, stride_}},
                             {"pad", std::vector<int64_t>{padding_, padding_}}});
}

Sequential& Sequential::add(std::shared_ptr<Module> m) {
  layers_.push_back(add_module(std::to_string(layers_.size()), std::move(m)));
  return *this;
}

Var Sequential::forward(Var x) {
  for (auto& l : layers_) x = (*l)(x);
  return x;
}

}  // namespace tessera::nn
