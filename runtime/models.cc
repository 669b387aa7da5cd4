#include <tessera/runtime/models.h>

#include <tessera/core/random.h>

namespace tessera::models {

Mlp::Mlp(uint64_t seed, int64_t in, int64_t hidden, int64_t classes) {
  fc1_ = add_module("fc1", std::make_shared<nn::Linear>(in, hidden, splitmix64(seed + 1)));
  fc2_ = add_module("fc2", std::make_shared<nn::Linear>(hidden, hidden, splitmix64(seed + 2)));
  fc3_ = add_module("fc3", std::make_shared<nn::Linear>(hidden, classes, splitmix64(seed + 3)));
}

nn::Var Mlp::forward(nn::Var x) {
  x = nn::flatten(x);
  x = nn::relu((*fc1_)(x));
  x = nn::relu((*fc2_)(x));
  return (*fc3_)(x);
}

std::string model_names() { return "mlp"; }

std::shared_ptr<nn::Module> make_model(const std::string& name, uint64_t seed) {
  if (name == "mlp") return std::make_shared<Mlp>(seed);
  TESSERA_THROW(ValueError, "unknown model '", name, "' (known: ", model_names(), ")");
}

}  // namespace tessera::models
