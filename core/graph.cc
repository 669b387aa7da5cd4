#include <tessera/core/graph.h>

#include <tessera/core/error.h>
#include <tessera/core/op_registry.h>

#include <sstream>

namespace tessera {

namespace {
template <typename T>
const T& get_attr(const std::map<std::string, AttrValue>& m, const std::string& k, const char* type) {
  auto it = m.find(k);
  TESSERA_CHECK(it != m.end(), "missing attribute '", k, "'");
  const T* v = std::get_if<T>(&it->second);
  TESSERA_CHECK(v != nullptr, "attribute '", k, "' is not of type ", type);
  return *v;
}
}  // namespace

int64_t Attrs::i(const std::string& k) const { return get_attr<int64_t>(m_, k, "int"); }
double Attrs::f(const std::string& k) const {
  auto it = m_.find(k);
  if (it != m_.end()) {
    if (auto* iv = std::get_if<int64_t>(&it->second)) return static_cast<double>(*iv);
  }
  return get_attr<double>(m_, k, "float");
}
const std::string& Attrs::s(const std::string& k) const { return get_attr<std::string>(m_, k, "string"); }
const std::vector<int64_t>& Attrs::ints(const std::string& k) const {
  return get_attr<std::vector<int64_t>>(m_, k, "int list");
}

std::string Attrs::str() const {
  std::ostringstream os;
  bool first = true;
  for (const auto& [k, v] : m_) {
    os << (first ? "" : ", ") << k << "=";
    first = false;
    if (auto* i = std::get_if<int64_t>(&v)) os << *i;
    else if (auto* d = std::get_if<double>(&v)) os << *d;
    else if (auto* s = std::get_if<std::string>(&v)) os << '"' << *s << '"';
    else os << dims_str(std::get<std::vector<int64_t>>(v));
  }
  return os.str();
}

int Graph::input(const std::string& name, const Shape& shape, DType dtype) {
  TESSERA_CHECK(find(name) < 0, "graph already has a value named '", name, "'");
  values_.push_back({shape, dtype, ValueKind::input, -1, name});
  inputs_.push_back(num_values() - 1);
  return num_values() - 1;
}

int Graph::param(const std::string& name, const Shape& shape) {
  TESSERA_CHECK(find(name) < 0, "graph already has a value named '", name, "'");
  values_.push_back({shape, DType::f32, ValueKind::param, -1, name});
  params_.push_back(num_values() - 1);
  return num_values() - 1;
}

const Value& Graph::value(int id) const {
  TESSERA_CHECK_INDEX(id >= 0 && id < num_values(), "value id ", id, " out of range (graph has ",
                      num_values(), " values)");
  return values_[id];
}
const Node& Graph::node(int id) const {
  TESSERA_CHECK_INDEX(id >= 0 && id < num_nodes(), "node id ", id, " out of range");
  return nodes_[id];
}

int Graph::find(const std::string& name) const {
  for (int id : inputs_) if (values_[id].name == name) return id;
  for (int id : params_) if (values_[id].name == name) return id;
  return -1;
}

std::vector<int> Graph::apply(const std::string& op, const std::vector<int>& inputs, Attrs attrs,
                              const std::string& scope) {
  const OpDef& def = op_registry().get(op);
  std::vector<const Value*> ins;
  for (int id : inputs) ins.push_back(&value(id));
  if (def.num_inputs >= 0) {
    TESSERA_CHECK(static_cast<int>(inputs.size()) == def.num_inputs, op,
                  scope.empty() ? "" : " in layer '" + scope + "'", ": takes ", def.num_inputs,
                  " inputs, got ", inputs.size());
  }
  Node n{op, inputs, {}, std::move(attrs), scope};
  std::vector<ValueType> outs = def.infer(n, ins);
  int node_id = num_nodes();
  for (size_t k = 0; k < outs.size(); ++k) {
    values_.push_back({outs[k].shape, outs[k].dtype, ValueKind::intermediate, node_id,
                       op + "." + std::to_string(node_id) + (outs.size() > 1 ? ":" + std::to_string(k) : "")});
    n.outputs.push_back(num_values() - 1);
  }
  nodes_.push_back(std::move(n));
  return nodes_.back().outputs;
}

int Graph::apply1(const std::string& op, const std::vector<int>& inputs, Attrs attrs, const std::string& scope) {
  auto outs = apply(op, inputs, std::move(attrs), scope);
  TESSERA_INTERNAL_ASSERT(outs.size() == 1, op, " has ", outs.size(), " outputs");
  return outs[0];
}

std::string Graph::str() const {
  std::ostringstream os;
  for (int id : inputs_) os << "input %" << id << " " << values_[id].name << " " << values_[id].shape.str() << " " << dtype_name(values_[id].dtype) << "\n";
  for (int id : params_) os << "param %" << id << " " << values_[id].name << " " << values_[id].shape.str() << "\n";
  for (const Node& n : nodes_) {
    for (size_t k = 0; k < n.outputs.size(); ++k) os << (k ? ", " : "") << "%" << n.outputs[k];
    os << " = " << n.op << "(";
    for (size_t k = 0; k < n.inputs.size(); ++k) os << (k ? ", " : "") << "%" << n.inputs[k];
    os << ")";
    if (!n.attrs.items().empty()) os << " {" << n.attrs.str() << "}";
    os << "  # " << values_[n.outputs[0]].shape.str();
    if (!n.scope.empty()) os << " @" << n.scope;
    os << "\n";
  }
  return os.str();
}

}  // namespace tessera
