// Graph, op registry, autodiff and executor: every differentiable op's gradient against
// central finite differences (evaluated in double from f32 forward passes), fan-out and
// reuse, shape errors that name the op, the layer and both shapes.
#include <tessera/core/autodiff.h>
#include <tessera/core/nn.h>
#include <tessera/core/precision.h>
#include <tessera/kernels/gemm.h>
#include <tessera/runtime/executor.h>

#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace tessera {
namespace {

using nn::Var;

struct Built {
  std::map<int, Tensor> feeds;  // value id -> tensor (inputs and params)
  int loss = -1;
  std::vector<int> wrt;
};

// Checks d loss / d wrt against central differences for every element of every wrt value.
void check_gradients(Graph& g, Built b, double tol, double eps = 1e-2) {
  Gradients gr = append_backward(g, b.loss, b.wrt);
  std::vector<int> fetch{b.loss};
  for (int w : b.wrt) fetch.push_back(gr.of(w));
  Executor ex(g, fetch);
  Executor fwd(g, {b.loss});
  for (auto& [id, t] : b.feeds) {
    ex.bind(id, t);
    fwd.bind(id, t);
  }
  ex.bind(gr.seed, Tensor::full({}, 1.0));
  RunState st;
  ex.run(st);
  for (int w : b.wrt) {
    Tensor analytic = ex.get(gr.of(w));
    Tensor& x = b.feeds.at(w);  // shares storage with what fwd has bound
    float* p = x.data<float>();
    for (int64_t i = 0; i < x.numel(); ++i) {
      float keep = p[i];
      p[i] = keep + static_cast<float>(eps);
      fwd.run(st);
      double up = fwd.get(b.loss).item();
      p[i] = keep - static_cast<float>(eps);
      fwd.run(st);
      double down = fwd.get(b.loss).item();
      p[i] = keep;
      double numeric = (up - down) / (2 * eps);
      double a = analytic.data<float>()[i];
      ASSERT_NEAR(a, numeric, tol * std::max(1.0, std::fabs(numeric)))
          << g.value(w).name << "[" << i << "]";
    }
  }
}

// A scalar loss from any value: sum of squares weighted by fixed random numbers, so every
// output element gets a distinct gradient.
int weighted_loss(Graph& g, std::map<int, Tensor>& feeds, int v) {
  int r = g.input("r" + std::to_string(v), g.value(v).shape);
  feeds[r] = Tensor::normal(g.value(v).shape, 0, 1, 99);
  int m = g.apply1("mul", {v, r});
  return g.apply1("mse", {m, g.apply1("scale", {r}, {{"alpha", 0.0}})});
}

TEST(Autodiff, ElementwiseOps) {
  for (const char* op : {"add", "sub", "mul", "relu", "gelu", "scale"}) {
    Graph g;
    Built b;
    int x = g.input("x", {3, 5});
    int y = g.input("y", {3, 5});
    b.feeds[x] = Tensor::normal({3, 5}, 0, 1, 1);
    b.feeds[y] = Tensor::normal({3, 5}, 0, 1, 2);
    int z;
    std::string o = op;
    if (o == "relu" || o == "gelu") z = g.apply1(o, {x});
    else if (o == "scale") z = g.apply1(o, {x}, {{"alpha", -1.5}});
    else z = g.apply1(o, {x, y});
    b.loss = weighted_loss(g, b.feeds, z);
    b.wrt = (o == "relu" || o == "gelu" || o == "scale") ? std::vector<int>{x} : std::vector<int>{x, y};
    SCOPED_TRACE(op);
    check_gradients(g, b, 2e-2);
  }
}

TEST(Autodiff, MatmulAllTransposes) {
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {
      Graph g;
      Built b;
      int a = g.input("a", ta ? Shape{4, 3} : Shape{3, 4});
      int w = g.param("w", tb ? Shape{5, 4} : Shape{4, 5});
      b.feeds[a] = Tensor::normal(g.value(a).shape, 0, 1, 3);
      b.feeds[w] = Tensor::normal(g.value(w).shape, 0, 1, 4);
      int c = g.apply1("matmul", {a, w}, {{"trans_a", int64_t{ta}}, {"trans_b", int64_t{tb}}});
      b.loss = weighted_loss(g, b.feeds, c);
      b.wrt = {a, w};
      SCOPED_TRACE(testing::Message() << "trans_a=" << ta << " trans_b=" << tb);
      check_gradients(g, b, 2e-2);
    }
  }
}

TEST(Autodiff, BiasAddReshapeAndCrossEntropy) {
  Graph g;
  Built b;
  int x = g.input("x", {4, 2, 3});
  int bias = g.param("b", {6});
  int labels = g.input("labels", {4}, DType::i32);
  b.feeds[x] = Tensor::normal({4, 2, 3}, 0, 1, 5);
  b.feeds[bias] = Tensor::normal({6}, 0, 1, 6);
  Tensor l = Tensor::empty({4}, DType::i32);
  for (int i = 0; i < 4; ++i) l.data<int32_t>()[i] = (i * 7) % 6;
  b.feeds[labels] = l;
  int flat = g.apply1("reshape", {x}, {{"shape", std::vector<int64_t>{4, 6}}});
  int logits = g.apply1("bias_add", {flat, bias});
  b.loss = g.apply("softmax_xent", {logits, labels})[0];
  b.wrt = {x, bias};
  check_gradients(g, b, 1e-2);
}

TEST(Autodiff, Conv2dWithBiasStridePaddingDilation) {
  struct Cfg {
    int64_t stride, pad, dil, k;
  };
  for (Cfg c : {Cfg{1, 1, 1, 3}, Cfg{2, 0, 1, 3}, Cfg{1, 2, 2, 3}, Cfg{1, 0, 1, 1}}) {
    Graph g;
    Built b;
    int x = g.input("x", {2, 6, 5, 3});
    int w = g.param("w", {c.k, c.k, 3, 4});
    int bias = g.param("b", {4});
    b.feeds[x] = Tensor::normal({2, 6, 5, 3}, 0, 1, 21);
    b.feeds[w] = Tensor::normal({c.k, c.k, 3, 4}, 0, 0.5, 22);
    b.feeds[bias] = Tensor::normal({4}, 0, 1, 23);
    int y = g.apply1("conv2d", {x, w, bias},
                     {{"stride", std::vector<int64_t>{c.stride, c.stride}},
                      {"pad", std::vector<int64_t>{c.pad, c.pad}},
                      {"dilation", std::vector<int64_t>{c.dil, c.dil}}});
    b.loss = weighted_loss(g, b.feeds, y);
    b.wrt = {x, w, bias};
    SCOPED_TRACE(testing::Message() << "stride " << c.stride << " pad " << c.pad << " dil " << c.dil);
    check_gradients(g, b, 2e-2);
  }
}

TEST(Autodiff, Pooling) {
  for (const char* op : {"maxpool2d", "avgpool2d"}) {
    Graph g;
    Built b;
    int x = g.input("x", {2, 6, 7, 3});
    b.feeds[x] = Tensor::normal({2, 6, 7, 3}, 0, 1, 31);
    int y = g.apply(op, {x}, {{"window", std::vector<int64_t>{3, 2}}, {"stride", std::vector<int64_t>{2, 2}},
                             {"pad", std::vector<int64_t>{1, 0}}})[0];
    b.loss = weighted_loss(g, b.feeds, y);
    b.wrt = {x};
    SCOPED_TRACE(op);
    check_gradients(g, b, 2e-2, 1e-3);  // small eps: max pooling is piecewise linear
  }
}

TEST(Autodiff, TransformerOps) {
  {  // layer norm
    Graph g;
    Built b;
    int x = g.input("x", {3, 4, 6});
    int gm = g.param("g", {6}), bt = g.param("b", {6});
    b.feeds[x] = Tensor::normal({3, 4, 6}, 0, 2, 41);
    b.feeds[gm] = Tensor::normal({6}, 1, 0.3, 42);
    b.feeds[bt] = Tensor::normal({6}, 0, 0.3, 43);
    b.loss = weighted_loss(g, b.feeds, g.apply("layer_norm", {x, gm, bt})[0]);
    b.wrt = {x, gm, bt};
    SCOPED_TRACE("layer_norm");
    check_gradients(g, b, 2e-2);
  }
  for (int ta = 0; ta < 2; ++ta) {
    for (int tb = 0; tb < 2; ++tb) {  // bmm, with alpha
      Graph g;
      Built b;
      int x = g.input("x", ta ? Shape{2, 4, 3} : Shape{2, 3, 4});
      int y = g.input("y", tb ? Shape{2, 5, 4} : Shape{2, 4, 5});
      b.feeds[x] = Tensor::normal(g.value(x).shape, 0, 1, 44);
      b.feeds[y] = Tensor::normal(g.value(y).shape, 0, 1, 45);
      int z = g.apply1("bmm", {x, y}, {{"trans_a", int64_t{ta}}, {"trans_b", int64_t{tb}}, {"alpha", 0.5}});
      b.loss = weighted_loss(g, b.feeds, z);
      b.wrt = {x, y};
      SCOPED_TRACE(testing::Message() << "bmm " << ta << tb);
      check_gradients(g, b, 2e-2);
    }
  }
  {  // permute, causal mask, softmax, slice_rows, dropout chained
    Graph g;
    Built b;
    int x = g.input("x", {2, 4, 4});
    b.feeds[x] = Tensor::normal({2, 4, 4}, 0, 1, 46);
    int p = g.apply1("permute", {x}, {{"order", std::vector<int64_t>{0, 2, 1}}});
    int m = g.apply1("causal_mask", {p});
    int sm = g.apply1("softmax", {m});
    int d = g.apply("dropout", {sm}, {{"p", 0.25}})[0];
    int r = g.apply1("reshape", {d}, {{"shape", std::vector<int64_t>{8, 4}}});
    int sl = g.apply1("slice_rows", {r}, {{"start", int64_t{2}}, {"end", int64_t{7}}});
    b.loss = weighted_loss(g, b.feeds, sl);
    b.wrt = {x};
    SCOPED_TRACE("permute/mask/softmax/dropout/slice");
    check_gradients(g, b, 2e-2, 1e-3);
  }
  {  // embedding: gradient wrt the table, repeated ids accumulate
    Graph g;
    Built b;
    int table = g.param("table", {5, 3});
    int ids = g.input("ids", {2, 3}, DType::i32);
    b.feeds[table] = Tensor::normal({5, 3}, 0, 1, 47);
    Tensor t = Tensor::empty({2, 3}, DType::i32);
    int32_t v[] = {0, 4, 4, 2, 0, 1};
    std::memcpy(t.data<int32_t>(), v, sizeof v);
    b.feeds[ids] = t;
    b.loss = weighted_loss(g, b.feeds, g.apply1("embedding", {table, ids}));
    b.wrt = {table};
    SCOPED_TRACE("embedding");
    check_gradients(g, b, 2e-2);
  }
}

TEST(Autodiff, TransformerBlockEndToEnd) {
  nn::Trace tr;
  nn::TransformerBlock block(8, 2, 5);
  Var x = tr.input("x", {2, 3, 8});
  Var y = block(x);
  tr.finish();
  Graph& g = tr.graph();
  Built b;
  b.feeds[x.id()] = Tensor::normal({2, 3, 8}, 0, 1, 48);
  for (auto& [id, p] : tr.params()) {
    b.feeds[id] = p->value;
    b.wrt.push_back(id);
  }
  b.wrt.push_back(x.id());
  b.loss = weighted_loss(g, b.feeds, y.id());
  check_gradients(g, b, 3e-2);
}

TEST(Autodiff, FanOutAndReuseSumGradients) {
  // loss = mse(x*x + x, 0) uses x three times.
  Graph g;
  Built b;
  int x = g.input("x", {7});
  b.feeds[x] = Tensor::normal({7}, 0, 1, 8);
  int sq = g.apply1("mul", {x, x});
  int y = g.apply1("add", {sq, x});
  b.loss = weighted_loss(g, b.feeds, y);
  b.wrt = {x};
  check_gradients(g, b, 2e-2);
}

TEST(Autodiff, ShapeErrorsNameOpLayerAndShapes) {
  nn::Trace t;
  Var x = t.input("x", {64, 784});
  Var w = t.input("w", {512, 10});
  try {
    nn::matmul(x, w);
    FAIL();
  } catch (const ValueError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("matmul"), std::string::npos) << m;
    EXPECT_NE(m.find("[64, 784]"), std::string::npos) << m;
    EXPECT_NE(m.find("[512, 10]"), std::string::npos) << m;
  }
  struct Net : nn::Module {
    std::shared_ptr<nn::Linear> fc1 = add_module("fc1", std::make_shared<nn::Linear>(784, 32, 1));
    std::shared_ptr<nn::Linear> fc2 = add_module("fc2", std::make_shared<nn::Linear>(31, 10, 2));
    Var forward(Var v) override { return (*fc2)(nn::relu((*fc1)(v))); }
  } net;
  try {
    net(x);
    FAIL();
  } catch (const ValueError& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("'fc2'"), std::string::npos) << m;
    EXPECT_NE(m.find("[64, 32]"), std::string::npos) << m;
    EXPECT_NE(m.find("31"), std::string::npos) << m;
  }
  EXPECT_THROW(t.apply1("no_such_op", {x}), ValueError);
  nn::Conv2d conv(3, 8, 3, 1);
  Var img = t.input("img", {4, 28, 28, 1});
  try {
    conv(img);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("3 channels, got [4, 28, 28, 1]"), std::string::npos) << e.what();
  }
}

TEST(Executor, ReusesBuffersAndReportsStats) {
  Graph g;
  int x = g.input("x", {256, 256});
  int v = x;
  for (int i = 0; i < 10; ++i) v = g.apply1("relu", {g.apply1("scale", {v}, {{"alpha", 1.01}})});
  Executor ex(g, {v});
  ex.bind(x, Tensor::normal({256, 256}, 0, 1, 1));
  RunState st;
  ex.run(st);
  // 20 intermediates of 256 KiB each, but at most 2 alive at once (plus the fetched one).
  EXPECT_LE(ex.peak_bytes(), 3u * 256 * 256 * 4);
  EXPECT_EQ(ex.op_stats().at("relu").calls, 10);
  EXPECT_NE(ex.stats_table().find("scale"), std::string::npos);
  double expect = 0;
  Tensor in = Tensor::normal({256, 256}, 0, 1, 1);
  expect = std::max(0.0, in.item({3, 4})) * std::pow(1.01, 10);
  EXPECT_NEAR(ex.get(v).item({3, 4}), expect, 1e-5 * std::max(1.0, expect));
  EXPECT_THROW(ex.get(x + 1), ValueError);
}

// Runs the graph once with TESSERA_FUSION set to `fusion`; returns the fetched values and the
// executor's op kinds with their call counts.
struct FusionRun {
  std::vector<std::vector<float>> vals;
  std::map<std::string, int64_t> calls;
};
FusionRun run_with_fusion(Graph& g, const std::map<int, Tensor>& feeds, int seed, const std::vector<int>& fetch,
                          const char* fusion) {
  setenv("TESSERA_FUSION", fusion, 1);
  Executor ex(g, fetch);
  unsetenv("TESSERA_FUSION");
  for (auto& [id, t] : feeds) ex.bind(id, t);
  ex.bind(seed, Tensor::full({}, 1.0));
  RunState st;
  ex.run(st);
  FusionRun r;
  for (int v : fetch) r.vals.push_back(ex.get(v).to_f32_vector());
  for (const auto& [k, v] : ex.op_stats()) r.calls[k] = v.calls;
  return r;
}

TEST(Executor, EpilogueFusionMatchesUnfusedExecution) {
  // conv2d(+bias input)+relu, conv2d + bias_add + relu, matmul + bias_add + relu, matmul + bias_add,
  // and a bias_add whose input is also read elsewhere (must not fuse).
  Graph g;
  int x = g.input("x", {2, 6, 6, 3});
  int w1 = g.param("w1", {3, 3, 3, 4}), b1 = g.param("b1", {4});
  int w2 = g.param("w2", {3, 3, 4, 4}), b2 = g.param("b2", {4});
  int w3 = g.param("w3", {144, 8}), b3 = g.param("b3", {8});
  int w4 = g.param("w4", {8, 5}), b4 = g.param("b4", {5});
  Attrs pad{{"pad", std::vector<int64_t>{1, 1}}};
  int h = g.apply1("relu", {g.apply1("conv2d", {x, w1, b1}, pad)});
  int c2 = g.apply1("conv2d", {h, w2}, pad);
  h = g.apply1("relu", {g.apply1("bias_add", {c2, b2})});
  h = g.apply1("reshape", {h}, {{"shape", std::vector<int64_t>{2, 144}}});
  int m3 = g.apply1("bias_add", {g.apply1("matmul", {h, w3}), b3});
  int r3 = g.apply1("relu", {m3});
  int mixed = g.apply1("add", {r3, m3});  // m3 has two readers: its producer chain stays unfused
  int out = g.apply1("bias_add", {g.apply1("matmul", {mixed, w4}), b4});
  std::map<int, Tensor> feeds{{x, Tensor::normal({2, 6, 6, 3}, 0, 1, 1)},   {w1, Tensor::normal({3, 3, 3, 4}, 0, 0.3, 2)},
                              {b1, Tensor::normal({4}, 0, 1, 3)},           {w2, Tensor::normal({3, 3, 4, 4}, 0, 0.3, 4)},
                              {b2, Tensor::normal({4}, 0, 1, 5)},           {w3, Tensor::normal({144, 8}, 0, 0.1, 6)},
                              {b3, Tensor::normal({8}, 0, 1, 7)},           {w4, Tensor::normal({8, 5}, 0, 0.3, 8)},
                              {b4, Tensor::normal({5}, 0, 1, 9)}};
  int loss = weighted_loss(g, feeds, out);
  std::vector<int> params{w1, b1, w2, b2, w3, b3, w4, b4};
  Gradients gr = append_backward(g, loss, params);
  std::vector<int> fetch{loss, out};
  for (int p : params) fetch.push_back(gr.of(p));
  FusionRun fused_run = run_with_fusion(g, feeds, gr.seed, fetch, "1");
  FusionRun plain_run = run_with_fusion(g, feeds, gr.seed, fetch, "0");
  const auto& fused = fused_run.vals;
  const auto& plain = plain_run.vals;
  std::vector<std::string> fused_kinds, plain_kinds;
  for (const auto& [k, n] : fused_run.calls) fused_kinds.push_back(k);
  for (const auto& [k, n] : plain_run.calls) plain_kinds.push_back(k);
  EXPECT_EQ(fused, plain);
  auto has = [](const std::vector<std::string>& v, const char* k) { return std::find(v.begin(), v.end(), k) != v.end(); };
  EXPECT_TRUE(has(fused_kinds, "conv2d+relu"));
  EXPECT_TRUE(has(fused_kinds, "conv2d+bias+relu"));
  EXPECT_TRUE(has(fused_kinds, "matmul+bias"));  // the last layer
  EXPECT_TRUE(has(fused_kinds, "matmul"));       // m3's producer, read twice, stays plain
  EXPECT_FALSE(has(plain_kinds, "conv2d+relu"));
}

// The cfp8 matmul encodes each operand in one pass with the bias its history predicts and
// re-encodes when amax outgrows the history (core/ops_linalg.cc). Its results must be those of
// amax-then-encode, run after run, while the inputs grow, shrink, spike and hold a NaN; a value
// read twice in a run (a and a^T) is scanned once.
TEST(Executor, Cfp8MatmulEqualsAmaxThenEncode) {
  Graph g;
  int a = g.input("a", {8, 40}), b = g.input("b", {40, 24});
  int c = g.apply1("matmul", {a, b}, {{"precision", std::string("cfp8")}});
  int d = g.apply1("matmul", {a, c}, {{"precision", std::string("cfp8")}, {"trans_a", int64_t{1}}});  // a read again
  Executor ex(g, {c, d});
  Cfp8Policy policy;
  policy.history = 3;
  PrecisionState state(policy), mirror(policy);
  const float scales[] = {1, 1, 0.5f, 0.25f, 8, 1, 1, 1, 64, 0.01f, 0.01f, 0.01f, 0.01f, 2};
  int step = 0;
  for (float s : scales) {
    Tensor ta = Tensor::normal({8, 40}, 0, s, 100 + step), tb = Tensor::normal({40, 24}, 0, 1.0 / s, 200 + step);
    if (step == 7) ta.data<float>()[5] = std::nanf("");
    ex.bind(a, ta);
    ex.bind(b, tb);
    RunState st;
    st.precision = &state;
    ex.run(st);
    // The reference: amax, observe, encode, multiply; node ids and operand keys as the op uses.
    auto encode = [&](const Tensor& x, int node, int k) {
      int bias = mirror.observe({node, k}, x.data<float>(), static_cast<size_t>(x.numel()), Cfp8Layout::e4m3);
      return x.to(DType::cfp8_e4m3, bias);
    };
    auto mm = [&](const Tensor& x, const Tensor& y, bool ta_, int node) {
      Tensor qx = encode(x, node, 0), qy = encode(y, node, 1);
      kernels::GemmDesc gd;
      gd.trans_a = ta_;
      gd.M = ta_ ? x.size(1) : x.size(0);
      gd.K = ta_ ? x.size(0) : x.size(1);
      gd.N = y.size(1);
      gd.a_type = gd.b_type = DType::cfp8_e4m3;
      gd.a_bias = qx.cfp8_bias();
      gd.b_bias = qy.cfp8_bias();
      Tensor out = Tensor::empty({gd.M, gd.N});
      kernels::gemm(gd, qx.raw_data(), qy.raw_data(), out.raw_data());
      return out;
    };
    Tensor want_c = mm(ta, tb, false, g.value(c).producer);
    Tensor want_d = mm(ta, want_c, true, g.value(d).producer);
    EXPECT_EQ(ex.get(c).to_f32_vector(), want_c.to_f32_vector()) << "step " << step;
    EXPECT_EQ(ex.get(d).to_f32_vector(), want_d.to_f32_vector()) << "step " << step;
    ++step;
  }
}

// relu -> max pool: the pool's gradient absorbs the relu gradient (maxpool2d_grad+relu_grad),
// for windows that tile the input (2x2 stride 2) and overlapping ones (3x3 stride 1, padding 1),
// with the same bits as running them apart. 0 and negative activations are plentiful (relu).
TEST(Executor, MaxPoolGradAbsorbsReluGrad) {
  Graph g;
  Attrs pad{{"pad", std::vector<int64_t>{1, 1}}};
  int x = g.input("x", {2, 8, 8, 3});
  int w = g.param("w", {3, 3, 3, 5}), w2 = g.param("w2", {3, 3, 5, 5}), shift = g.param("shift", {5});
  int h = g.apply1("relu", {g.apply1("conv2d", {x, w}, pad)});
  h = g.apply("maxpool2d", {h}, {{"window", std::vector<int64_t>{2, 2}}})[0];  // tiled: [2, 4, 4, 5]
  h = g.apply1("relu", {g.apply1("bias_add", {g.apply1("conv2d", {h, w2}, pad), shift})});  // many zeros
  h = g.apply("maxpool2d", {h}, {{"window", std::vector<int64_t>{3, 3}}, {"stride", std::vector<int64_t>{1, 1}},
                                 {"pad", std::vector<int64_t>{1, 1}}})[0];  // overlapping
  std::map<int, Tensor> feeds{{x, Tensor::normal({2, 8, 8, 3}, 0, 1, 11)}, {w, Tensor::normal({3, 3, 3, 5}, 0, 0.5, 12)},
                              {w2, Tensor::normal({3, 3, 5, 5}, 0, 0.5, 13)}, {shift, Tensor::full({5}, -1.0)}};
  int loss = weighted_loss(g, feeds, h);
  Gradients gr = append_backward(g, loss, {x, w, w2});
  std::vector<int> fetch{loss, gr.of(x), gr.of(w), gr.of(w2)};
  FusionRun fused_run = run_with_fusion(g, feeds, gr.seed, fetch, "1");
  FusionRun plain_run = run_with_fusion(g, feeds, gr.seed, fetch, "0");
  const auto& fused = fused_run.vals;
  const auto& plain = plain_run.vals;
  const int64_t fused_calls = fused_run.calls.count("maxpool2d_grad+relu_grad") ? fused_run.calls.at("maxpool2d_grad+relu_grad") : 0;
  const int64_t plain_calls = plain_run.calls.count("maxpool2d_grad+relu_grad") ? plain_run.calls.at("maxpool2d_grad+relu_grad") : 0;
  EXPECT_EQ(fused_calls, 2);
  EXPECT_EQ(plain_calls, 0);
  ASSERT_EQ(fused.size(), plain.size());
  for (size_t i = 0; i < fused.size(); ++i) {
    ASSERT_EQ(fused[i].size(), plain[i].size());
    EXPECT_EQ(std::memcmp(fused[i].data(), plain[i].data(), fused[i].size() * sizeof(float)), 0) << "fetch " << i;
  }
  double nonzero = 0;
  for (float v : fused[1]) nonzero += v != 0;
  EXPECT_GT(nonzero, 0) << "gradients reach the input";
}

TEST(Executor, BadBindsAreRejected) {
  Graph g;
  int x = g.input("x", {2, 3});
  int y = g.apply1("relu", {x});
  Executor ex(g, {y});
  EXPECT_THROW(ex.bind(x, Tensor::zeros({3, 2})), ValueError);
  EXPECT_THROW(ex.bind(y, Tensor::zeros({2, 3})), ValueError);
  RunState st;
  EXPECT_THROW(ex.run(st), ValueError);  // x not bound
}

}  // namespace
}  // namespace tessera
