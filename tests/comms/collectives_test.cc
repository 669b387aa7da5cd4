// The collective grid on the loopback transport: mesh x ranks x (collective, scope, count,
// dtype, algorithm, in-place), plus the choice of algorithm and bad options.
#include "grid.h"
#include "loopback_world.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace tessera::comms {
namespace {

using testing::Case;

struct World {
  const char* mesh;
  int ranks;
  bool big;
};

class LoopbackGrid : public ::testing::TestWithParam<World> {};

TEST_P(LoopbackGrid, EveryCaseExact) {
  World w = GetParam();
  Mesh mesh = Mesh::parse(w.mesh);
  auto cases = testing::grid(w.big);
  std::mutex mu;
  std::vector<std::string> failures;
  auto errors = testing::run_loopback(mesh, w.ranks, [&](MeshComm& c) {
    for (const Case& k : cases) {
      std::string e = testing::run_case(c, k);
      if (!e.empty()) {
        std::lock_guard<std::mutex> lock(mu);
        failures.push_back("rank " + std::to_string(c.rank()) + ": " + e);
      }
    }
  });
  for (size_t r = 0; r < errors.size(); ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  for (size_t i = 0; i < failures.size() && i < 20; ++i) ADD_FAILURE() << failures[i];
  EXPECT_TRUE(failures.empty()) << failures.size() << " failing case(s) of " << cases.size();
}

INSTANTIATE_TEST_SUITE_P(
    Meshes, LoopbackGrid,
    ::testing::Values(World{"1x1", 1, false}, World{"1x4", 1, true}, World{"1x4", 2, false},
                      World{"1x4", 4, false}, World{"4x1", 1, false}, World{"4x1", 4, false},
                      World{"2x2", 1, false}, World{"2x2", 2, false}, World{"2x2", 4, true},
                      World{"3x5", 1, false}, World{"3x5", 3, false}, World{"3x5", 5, false},
                      World{"3x5", 15, false}, World{"4x6", 6, false}),
    [](const ::testing::TestParamInfo<World>& i) {
      std::string s = std::string(i.param.mesh) + "_on_" + std::to_string(i.param.ranks);
      for (char& ch : s) if (ch == ':') ch = '_';
      return s;
    });

TEST(Collectives, AutoChoosesMesh2dOnA2dGridAndHonoursTheEnvironment) {
  Mesh mesh = Mesh::parse("2x2");
  auto errors = testing::run_loopback(mesh, 4, [&](MeshComm& c) {
    ::unsetenv("TESSERA_ALLREDUCE_ALGO");
    auto ch = choose_algorithm(c.world(), OpKind::allreduce, 1 << 20);
    if (ch.algorithm != Algorithm::mesh2d) throw std::runtime_error("expected mesh2d, got " + ch.explain());
    // A row is 1-D: ring and mesh2d are the same schedule; ties go to ring.
    auto row = choose_algorithm(c.rows(), OpKind::allreduce, 1 << 20);
    if (row.algorithm != Algorithm::ring) throw std::runtime_error("rows: expected ring, got " + row.explain());
    // Native is not offered without MPI.
    if (ch.native_s >= 0) throw std::runtime_error("native priced on loopback");
  });
  for (auto& e : errors) EXPECT_EQ(e, "");
}

// TESSERA_COLLECTIVE_ALGO forces every collective with a choice; TESSERA_ALLREDUCE_ALGO
// overrides it for all-reduce only.
TEST(Collectives, CollectiveEnvironmentForcesEveryCollective) {
  ::setenv("TESSERA_COLLECTIVE_ALGO", "ring", 1);
  ::setenv("TESSERA_ALLREDUCE_ALGO", "mesh2d", 1);
  Mesh mesh = Mesh::parse("2x2");  // auto picks mesh2d here for every kind
  auto errors = testing::run_loopback(mesh, 1, [&](MeshComm& c) {
    std::vector<std::vector<float>> in(4, std::vector<float>(8, 1.0f)), out(4, std::vector<float>(8, 0.0f));
    auto expect = [](const CollectiveRecord& r, const char* want) {
      if (r.algorithm != want) throw std::runtime_error("expected " + std::string(want) + ", got " + r.algorithm);
    };
    AllreduceOptions ar;
    ar.count = 8;
    ReduceScatterOptions rs;
    rs.count = 2;
    AllgatherOptions ag;
    ag.count = 2;
    BroadcastOptions bc;
    bc.count = 8;
    for (int i = 0; i < 4; ++i) {
      ar.inputs.push_back(in[i].data());
      ar.outputs.push_back(out[i].data());
      rs.inputs.push_back(in[i].data());
      rs.outputs.push_back(out[i].data());
      ag.inputs.push_back(in[i].data());
      ag.outputs.push_back(out[i].data());
      bc.buffers.push_back(out[i].data());
    }
    expect(allreduce(c.world(), ar), "mesh2d");
    expect(reduce_scatter(c.world(), rs), "ring");
    expect(allgather(c.world(), ag), "ring");
    expect(broadcast(c.world(), bc), "ring");
    bc.algorithm = Algorithm::mesh2d;  // the option wins over the environment
    expect(broadcast(c.world(), bc), "mesh2d");
  });
  ::unsetenv("TESSERA_ALLREDUCE_ALGO");
  EXPECT_EQ(resolve_algorithm(Algorithm::auto_), Algorithm::ring);  // all-reduce falls back to it
  ::setenv("TESSERA_COLLECTIVE_ALGO", "fastest", 1);
  try {
    resolve_algorithm(Algorithm::auto_, false);
    ADD_FAILURE();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("TESSERA_COLLECTIVE_ALGO='fastest'"), std::string::npos) << e.what();
  }
  ::unsetenv("TESSERA_COLLECTIVE_ALGO");
  for (auto& e : errors) EXPECT_EQ(e, "");
}

TEST(Collectives, EnvironmentForcesTheAlgorithm) {
  ::setenv("TESSERA_ALLREDUCE_ALGO", "ring", 1);
  EXPECT_EQ(resolve_algorithm(Algorithm::auto_), Algorithm::ring);
  EXPECT_EQ(resolve_algorithm(Algorithm::mesh2d), Algorithm::mesh2d);  // the option wins
  Mesh mesh = Mesh::parse("2x2");
  auto errors = testing::run_loopback(mesh, 1, [&](MeshComm& c) {
    std::vector<float> x(8, 1.0f);
    std::vector<std::vector<float>> bufs(4, x);
    AllreduceOptions o;
    o.count = 8;
    for (auto& b : bufs) {
      o.inputs.push_back(b.data());
      o.outputs.push_back(b.data());
    }
    auto rec = allreduce(c.world(), o);
    if (rec.algorithm != "ring") throw std::runtime_error("env ignored: " + rec.algorithm);
  });
  ::setenv("TESSERA_ALLREDUCE_ALGO", "bogus", 1);
  EXPECT_THROW(resolve_algorithm(Algorithm::auto_), ValueError);
  ::setenv("TESSERA_ALLREDUCE_ALGO", "native", 1);
  auto native_errors = testing::run_loopback(mesh, 1, [&](MeshComm& c) {
    std::vector<float> b(4 * 8, 0.0f);
    AllreduceOptions o;
    o.count = 8;
    for (int i = 0; i < 4; ++i) {
      o.inputs.push_back(b.data() + i * 8);
      o.outputs.push_back(b.data() + i * 8);
    }
    allreduce(c.world(), o);
  });
  ::unsetenv("TESSERA_ALLREDUCE_ALGO");
  for (auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_NE(native_errors[0].find("native algorithm needs the mpi transport"), std::string::npos)
      << native_errors[0];
}

TEST(Collectives, BadOptionsAreRejectedBeforeAnythingIsSent) {
  Mesh mesh = Mesh::parse("1x2");
  auto errors = testing::run_loopback(mesh, 1, [&](MeshComm& c) {
    float a[4] = {}, b[4] = {};
    AllreduceOptions o;
    o.count = 4;
    o.inputs = {a};
    o.outputs = {a};
    EXPECT_THROW(allreduce(c.world(), o), ValueError);  // 2 nodes hosted, 1 buffer
    o.inputs = {a, nullptr};
    o.outputs = {a, b};
    EXPECT_THROW(allreduce(c.world(), o), ValueError);  // null buffer
    o.inputs = {a, b};
    o.dtype = DType::i32;
    EXPECT_THROW(allreduce(c.world(), o), TypeError);
    o.dtype = DType::cfp8_e4m3;
    o.cfp8_bias = 64;
    EXPECT_THROW(allreduce(c.world(), o), ValueError);
    o.dtype = DType::f32;
    o.cfp8_bias = -1;
    o.tag = c.max_user_tag() + 1;
    EXPECT_THROW(allreduce(c.world(), o), ValueError);
    BroadcastOptions bo;
    bo.buffers = {a, b};
    bo.count = 4;
    bo.root = 2;
    EXPECT_THROW(broadcast(c.world(), bo), IndexError);
    SendRecvOptions so;
    so.from = 0;
    so.to = 0;
    so.buffer = a;
    so.count = 1;
    EXPECT_THROW(send(c, so), ValueError);
    // The communicator is still usable after rejected calls.
    o.tag = 0;
    o.inputs = {a, b};
    o.outputs = {a, b};
    allreduce(c.world(), o);
  });
  EXPECT_EQ(errors[0], "");
}

TEST(Collectives, SendRecvBetweenRanksAndWithinOne) {
  Mesh mesh = Mesh::parse("2x2");
  auto errors = testing::run_loopback(mesh, 2, [&](MeshComm& c) {
    // Rank 0 hosts column 0 (nodes 0 and 2), rank 1 column 1 (nodes 1 and 3).
    std::vector<float> data(100), got(100, -1);
    for (int i = 0; i < 100; ++i) data[i] = static_cast<float>(i);
    SendRecvOptions o;
    o.count = 100;
    o.tag = 3;
    if (c.rank() == 0) {
      o.from = 0; o.to = 2; o.buffer = data.data();
      send(c, o);                                   // both nodes here: returns at once
      o.buffer = got.data();
      recv(c, o);
      if (got != data) throw std::runtime_error("local send/recv mismatch");
      o.from = 0; o.to = 3; o.buffer = data.data();
      send(c, o);
    } else {
      o.from = 0; o.to = 3; o.buffer = got.data();
      recv(c, o);
      if (got != data) throw std::runtime_error("remote send/recv mismatch");
    }
  });
  for (auto& e : errors) EXPECT_EQ(e, "");
}

TEST(Collectives, RingOrderIsAHamiltonianCycleWhenOneSideIsEven) {
  for (auto [r, c] : {std::pair{2, 2}, {4, 6}, {3, 4}, {4, 3}, {2, 5}}) {
    auto order = ring_order(r, c);
    ASSERT_EQ(order.size(), static_cast<size_t>(r * c));
    std::vector<int> seen(r * c, 0);
    for (size_t i = 0; i < order.size(); ++i) {
      ++seen[order[i]];
      int a = order[i], b = order[(i + 1) % order.size()];
      int d = std::abs(a / c - b / c) + std::abs(a % c - b % c);
      EXPECT_EQ(d, 1) << r << "x" << c << " step " << i;
    }
    for (int s : seen) EXPECT_EQ(s, 1);
  }
  auto odd = ring_order(3, 5);  // no Hamiltonian cycle: a snake, every member once
  std::vector<int> seen(15, 0);
  for (int m : odd) ++seen[m];
  for (int s : seen) EXPECT_EQ(s, 1);
}

}  // namespace
}  // namespace tessera::comms
