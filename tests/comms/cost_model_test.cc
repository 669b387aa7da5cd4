// The α-β formulas of cost_model.h against hand computation, and the choice they make.
#include <tessera/comms/cost_model.h>
#include <tessera/core/error.h>

#include <gtest/gtest.h>

#include <cstdlib>

namespace tessera::comms {
namespace {

TEST(CostModel, RingByHand) {
  AlphaBeta e{1e-6, 1e9};
  // 2(p-1)α + 2(p-1)/p n/β with p = 4, n = 1 MB: 6 µs + 1.5 ms.
  EXPECT_DOUBLE_EQ(ring_allreduce_time(1e6, 4, e), 6e-6 + 1.5e-3);
  EXPECT_DOUBLE_EQ(ring_allreduce_time(1e6, 1, e), 0);
  EXPECT_DOUBLE_EQ(ring_allreduce_time(0, 2, e), 2e-6);
}

TEST(CostModel, Mesh2dByHand) {
  AlphaBeta x{1e-6, 1e9}, y{2e-6, 0.5e9};
  // r = 2, c = 3, n = 1.2 MB:
  //   rows:    2(c-1)α_x + 2(c-1)/c n/β_x = 4e-6 + 1.6e-3
  //   columns: 2(r-1)α_y + 2(r-1)/(rc) n/β_y = 4e-6 + 0.8e-3
  EXPECT_NEAR(mesh2d_allreduce_time(1.2e6, 2, 3, x, y), 8e-6 + 2.4e-3, 1e-15);
  // A single row is the ring.
  EXPECT_DOUBLE_EQ(mesh2d_allreduce_time(1e6, 1, 4, x, x), ring_allreduce_time(1e6, 4, x));
  // Equal links: same bandwidth term as the ring, fewer latency steps.
  double ring = ring_allreduce_time(1e6, 16, x), mesh = mesh2d_allreduce_time(1e6, 4, 4, x, x);
  EXPECT_NEAR(ring - mesh, (30 - 12) * 1e-6, 1e-12);
}

TEST(CostModel, NativeByHand) {
  AlphaBeta t{5e-6, 2e9}, m{1e-6, 10e9};
  // k = 3 local nodes, P = 4 ranks, n = 1 MB:
  //   2(k-1)(α_m + n/β_m) = 4 (1e-6 + 1e-4);  2⌈log2 4⌉α_t = 20e-6;  2(3/4) n/β_t = 0.75e-3
  EXPECT_NEAR(native_allreduce_time(1e6, 4, 3, t, m), 4 * 1.01e-4 + 20e-6 + 0.75e-3, 1e-15);
  EXPECT_NEAR(native_allreduce_time(1e6, 3, 1, t, m), 2 * 2 * 5e-6 + 2.0 * 2 / 3 * 1e6 / 2e9, 1e-15);
}

TEST(CostModel, ChoiceFollowsThePredictions) {
  AllreduceGeometry g;
  g.rows = 4;
  g.cols = 4;
  g.edges.ring = g.edges.x = g.edges.y = {10e-6, 5e9};
  g.ranks = 16;
  g.transport = {10e-6, 5e9};
  EXPECT_EQ(choose_allreduce(1 << 10, g).algorithm, Algorithm::mesh2d);  // fewer steps
  g.native_available = true;
  // native: 2·4·10 µs = 80 µs latency vs mesh2d 12 steps = 120 µs, same bandwidth term.
  auto c = choose_allreduce(1 << 10, g);
  EXPECT_EQ(c.algorithm, Algorithm::native) << c.explain();
  EXPECT_NE(c.explain().find("native"), std::string::npos);
  g.rows = 1;  // 1 x 4: ring and mesh2d tie; ring wins ties
  g.cols = 4;
  g.native_available = false;
  EXPECT_EQ(choose_allreduce(1 << 20, g).algorithm, Algorithm::ring);
}

TEST(CostModel, AlgorithmNames) {
  EXPECT_EQ(algorithm_from_name("mesh2d"), Algorithm::mesh2d);
  EXPECT_EQ(algorithm_from_name("auto"), Algorithm::auto_);
  try {
    algorithm_from_name("tree");
    ADD_FAILURE();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("'tree'"), std::string::npos);
  }
  ::setenv("TESSERA_ALLREDUCE_ALGO", "mesh2d", 1);
  EXPECT_EQ(resolve_algorithm(Algorithm::auto_), Algorithm::mesh2d);
  EXPECT_EQ(resolve_algorithm(Algorithm::ring), Algorithm::ring);
  ::setenv("TESSERA_ALLREDUCE_ALGO", "fast", 1);
  EXPECT_THROW(resolve_algorithm(Algorithm::auto_), ValueError);
  ::unsetenv("TESSERA_ALLREDUCE_ALGO");
  EXPECT_EQ(resolve_algorithm(Algorithm::auto_), Algorithm::auto_);
}

}  // namespace
}  // namespace tessera::comms
