#include <tessera/comms/cost_model.h>
#include <tessera/core/error.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace tessera::comms {

const char* algorithm_name(Algorithm a) {
  switch (a) {
    case Algorithm::auto_: return "auto";
    case Algorithm::ring: return "ring";
    case Algorithm::mesh2d: return "mesh2d";
    case Algorithm::native: return "native";
  }
  return "?";
}

Algorithm algorithm_from_name(std::string_view s) {
  for (Algorithm a : {Algorithm::auto_, Algorithm::ring, Algorithm::mesh2d, Algorithm::native}) {
    if (s == algorithm_name(a)) return a;
  }
  TESSERA_THROW(ValueError, "unknown collective algorithm '", s,
                "' (choose ring, mesh2d, native or auto)");
}

Algorithm resolve_algorithm(Algorithm option, bool allreduce) {
  if (option != Algorithm::auto_) return option;
  const char* name = "TESSERA_ALLREDUCE_ALGO";
  const char* env = allreduce ? std::getenv(name) : nullptr;
  if (!env || !*env) {
    name = "TESSERA_COLLECTIVE_ALGO";
    env = std::getenv(name);
  }
  if (!env || !*env) return Algorithm::auto_;
  try {
    return algorithm_from_name(env);
  } catch (const ValueError&) {
    TESSERA_THROW(ValueError, name, "='", env, "' is not an algorithm (choose ring, mesh2d, native or auto)");
  }
}

double ring_allreduce_time(double n, int p, AlphaBeta e) {
  if (p <= 1) return 0;
  return 2.0 * (p - 1) * e.alpha + 2.0 * (p - 1) / p * n / e.beta;
}

double mesh2d_allreduce_time(double n, int r, int c, AlphaBeta x, AlphaBeta y) {
  double t = 0;
  if (c > 1) t += 2.0 * (c - 1) * x.alpha + 2.0 * (c - 1) / c * n / x.beta;
  if (r > 1) t += 2.0 * (r - 1) * y.alpha + 2.0 * (r - 1) / (static_cast<double>(r) * c) * n / y.beta;
  return t;
}

double native_allreduce_time(double n, int P, int k, AlphaBeta t, AlphaBeta m) {
  double local = 2.0 * (k - 1) * (m.alpha + n / m.beta);
  if (P <= 1) return local;
  return local + 2.0 * std::ceil(std::log2(P)) * t.alpha + 2.0 * (P - 1) / P * n / t.beta;
}

namespace {
std::string ms(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g ms", s * 1e3);
  return buf;
}
}  // namespace

std::string AlgorithmChoice::explain() const {
  return std::string(algorithm_name(algorithm)) + " (predicted: ring " + ms(ring_s) + ", mesh2d " +
         ms(mesh2d_s) + ", native " + (native_s < 0 ? std::string("n/a") : ms(native_s)) + ")";
}

AlgorithmChoice choose_allreduce(double n, const AllreduceGeometry& g) {
  AlgorithmChoice c;
  c.ring_s = ring_allreduce_time(n, g.rows * g.cols, g.edges.ring);
  c.mesh2d_s = mesh2d_allreduce_time(n, g.rows, g.cols, g.edges.x, g.edges.y);
  c.native_s = g.native_available
                   ? native_allreduce_time(n, g.ranks, g.nodes_per_rank, g.transport, g.memory)
                   : -1;
  c.algorithm = Algorithm::ring;
  double best = c.ring_s;
  if (c.mesh2d_s < best) {
    best = c.mesh2d_s;
    c.algorithm = Algorithm::mesh2d;
  }
  if (c.native_s >= 0 && c.native_s < best) c.algorithm = Algorithm::native;
  return c;
}

}  // namespace tessera::comms
