// Graph IR: values (shape, dtype) and ops (name, attributes, inputs, outputs), in execution
// order. Model authors never build it by hand: nn::Module::forward traces it (core/nn.h), and
// autodiff (core/autodiff.h) appends the backward ops to the same graph.
//
//   Graph g;
//   int x = g.input("x", {64, 784});
//   int w = g.param("fc.weight", {784, 10});
//   int y = g.apply1("matmul", {x, w}, {}, "fc");     // shape inferred: [64, 10]
//   std::cout << g.str();
//
// apply() validates through the op registry (core/op_registry.h); errors name the op, the
// layer (scope) and the shapes involved.
#pragma once

#include <tessera/core/dtype.h>
#include <tessera/core/shape.h>

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace tessera {

using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>>;

class Attrs {
 public:
  Attrs() = default;
  Attrs(std::initializer_list<std::pair<const std::string, AttrValue>> kv) : m_(kv) {}
  Attrs& set(const std::string& k, AttrValue v) {
    m_[k] = std::move(v);
    return *this;
  }
  bool has(const std::string& k) const { return m_.count(k) != 0; }
  int64_t i(const std::string& k) const;  // ValueError if missing or of another type
  int64_t i(const std::string& k, int64_t dflt) const { return has(k) ? i(k) : dflt; }
  double f(const std::string& k) const;
  double f(const std::string& k, double dflt) const { return has(k) ? f(k) : dflt; }
  const std::string& s(const std::string& k) const;
  std::string s(const std::string& k, const std::string& dflt) const { return has(k) ? s(k) : dflt; }
  const std::vector<int64_t>& ints(const std::string& k) const;
  const std::map<std::string, AttrValue>& items() const { return m_; }
  std::string str() const;

 private:
  std::map<std::string, AttrValue> m_;
};

enum class ValueKind { input, param, intermediate };

struct Value {
  Shape shape;
  DType dtype = DType::f32;
  ValueKind kind = ValueKind::intermediate;
  int producer = -1;  // node index, -1 for inputs and params
  std::string name;   // inputs and params; intermediates get "<op>.<node>"
};

struct Node {
  std::string op;
  std::vector<int> inputs, outputs;
  Attrs attrs;
  std::string scope;  // the layer that emitted it, for messages ("cnn.conv2")
};

struct ValueType {
  Shape shape;
  DType dtype = DType::f32;
};

class Graph {
 public:
  int input(const std::string& name, const Shape& shape, DType dtype = DType::f32);
  int param(const std::string& name, const Shape& shape);  // trainable f32 master weight
  // Appends an op; returns its output value ids.
  std::vector<int> apply(const std::string& op, const std::vector<int>& inputs, Attrs attrs = {},
                         const std::string& scope = "");
  int apply1(const std::string& op, const std::vector<int>& inputs, Attrs attrs = {},
             const std::string& scope = "");

  int num_values() const { return static_cast<int>(values_.size()); }
  int num_nodes() const { return static_cast<int>(nodes_.size()); }
  const Value& value(int id) const;
  const Node& node(int id) const;
  const std::vector<int>& inputs() const { return inputs_; }
  const std::vector<int>& params() const { return params_; }
  int find(const std::string& name) const;  // input or param by name, -1 if absent

  std::string str() const;  // one line per op

 private:
  std::vector<Value> values_;
  std::vector<Node> nodes_;
  std::vector<int> inputs_, params_;
};

}  // namespace tessera
