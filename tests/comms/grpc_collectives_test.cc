// The collective grid over the grpc transport, one process per rank on 127.0.0.1, started by
// tests/comms/run_ranks.sh (TESSERA_RANK / TESSERA_WORLD_SIZE / TESSERA_COORDINATOR). Each
// process checks the nodes it hosts; failure counts are summed over the ranks with a
// tessera all-reduce, so every rank reports the same verdict; rank 0 prints.
#include "grid.h"

#include <tessera/comms/grpc/transport.h>

#include <gtest/gtest.h>

#include <cstdlib>

namespace tessera::comms {
namespace {

std::shared_ptr<grpc::GrpcTransport> g_transport;

bool tcp_everywhere() {
  const char* local = std::getenv("TESSERA_GRPC_LOCAL");
  return local && std::string(local) == "tcp";
}
// TESSERA_TEST_TCP_RANKS: comma-separated ranks that are told TESSERA_GRPC_LOCAL=tcp.
bool tcp_rank(int r) {
  const char* v = std::getenv("TESSERA_TEST_TCP_RANKS");
  return v && ("," + std::string(v) + ",").find("," + std::to_string(r) + ",") != std::string::npos;
}

int sum_over_ranks(int mine) {
  MeshComm c(Mesh::parse("1x" + std::to_string(g_transport->size())), g_transport);
  float v = static_cast<float>(mine);
  AllreduceOptions o;
  o.count = 1;
  o.inputs = {&v};
  o.outputs = {&v};
  allreduce(c.world(), o);
  return static_cast<int>(v);
}

TEST(GrpcGrid, EveryCaseExact) {
  int p = g_transport->size();
  for (std::string ms : {"1x" + std::to_string(p), std::string("2x2")}) {
    MeshComm comm(Mesh::parse(ms), g_transport);
    auto cases = testing::grid(/*big=*/ms == "2x2", false);
    std::vector<std::string> failures;
    for (const auto& k : cases) {
      try {
        std::string e = testing::run_case(comm, k);
        if (!e.empty()) failures.push_back(ms + ": " + e);
      } catch (const std::exception& e) {
        failures.push_back(ms + ": " + k.str() + ": threw " + e.what());
        break;
      }
    }
    for (size_t i = 0; i < failures.size() && i < 10; ++i) ADD_FAILURE() << "rank " << g_transport->rank() << ": " << failures[i];
    if (comm.broken()) return;
    EXPECT_EQ(sum_over_ranks(static_cast<int>(failures.size())), 0)
        << "mesh " << ms << ", " << cases.size() << " cases over " << p << " grpc processes";
  }
}

// Ranks started on one machine reach each other over Unix sockets, unless TESSERA_GRPC_LOCAL=tcp
// (ctest runs this binary both ways, so the grid above covers both routes) or either end is one
// of the ranks in TESSERA_TEST_TCP_RANKS (a job with both routes at once).
TEST(GrpcRoutes, CoLocatedPeersUseUnixSocketsUnlessToldTcp) {
  for (int p = 0; p < g_transport->size(); ++p) {
    const bool tcp = tcp_everywhere() || tcp_rank(p) || tcp_rank(g_transport->rank());
    EXPECT_EQ(g_transport->route(p), p == g_transport->rank() ? "self" : tcp ? "tcp" : "unix") << "peer " << p;
  }
  EXPECT_THROW(g_transport->route(g_transport->size()), IndexError);
}

// The cost model's inputs are the same on every rank (else ranks could choose different
// algorithms): the Unix-socket figures only when every rank is reached that way.
TEST(GrpcRoutes, EveryRankSeesTheSameCosts) {
  bool any_tcp = tcp_everywhere();
  for (int p = 0; p < g_transport->size(); ++p) any_tcp = any_tcp || tcp_rank(p);
  const int alpha_us = static_cast<int>(g_transport->alpha() * 1e6 + 0.5);
  EXPECT_EQ(alpha_us, any_tcp ? 51 : 43);
  EXPECT_EQ(sum_over_ranks(alpha_us), alpha_us * g_transport->size());
}

// A completed send leaves the caller's buffer free, for eager (<= 256 KiB, copied) and
// acknowledged (larger, sent from the buffer) messages alike: rank 0 overwrites its buffer after
// each send completes and sends again; rank 1 must see every version intact.
TEST(GrpcTransport, BufferIsReusableOnceTheSendCompletes) {
  if (g_transport->size() < 2 || g_transport->rank() > 1) return;
  const auto deadline = [] { return deadline_after(std::chrono::seconds(30)); };
  for (size_t bytes : {size_t{8}, size_t{60} << 10, size_t{256} << 10, (size_t{256} << 10) + 4, size_t{3} << 20}) {
    const size_t n = bytes / sizeof(uint32_t);
    std::vector<uint32_t> buf(n);
    for (uint32_t version = 0; version < 3; ++version) {
      const uint64_t tag = 1000 + version;
      if (g_transport->rank() == 0) {
        for (size_t i = 0; i < n; ++i) buf[i] = static_cast<uint32_t>(i * 2654435761u) ^ version;
        ASSERT_TRUE(g_transport->isend(1, tag, buf.data(), bytes)->wait(deadline()));
        std::fill(buf.begin(), buf.end(), 0xdeadbeefu);  // reused at once
      } else {
        std::vector<uint32_t> got(n, 0);
        ASSERT_TRUE(g_transport->irecv(0, tag, got.data(), bytes)->wait(deadline()));
        size_t bad = 0;
        for (size_t i = 0; i < n; ++i) bad += got[i] != (static_cast<uint32_t>(i * 2654435761u) ^ version);
        EXPECT_EQ(bad, 0u) << bytes << " bytes, version " << version;
      }
    }
  }
}

TEST(GrpcGrid, LargeMessagesAreChunkedAndChecksummed) {
  // 3 MiB per node with 1 MiB transport chunks and 256 KiB segments: multi-chunk messages.
  MeshComm comm(Mesh::parse("1x" + std::to_string(g_transport->size())), g_transport);
  std::vector<float> v(3 << 18, 1.0f);
  AllreduceOptions o;
  o.count = v.size();
  o.inputs = {v.data()};
  o.outputs = {v.data()};
  o.chunk_bytes = 256 << 10;
  auto rec = allreduce(comm.world(), o);
  EXPECT_EQ(v.front(), static_cast<float>(g_transport->size()));
  EXPECT_EQ(v.back(), static_cast<float>(g_transport->size()));
  EXPECT_GT(rec.payload_bytes, 0u);
}

}  // namespace
}  // namespace tessera::comms

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto opts = tessera::comms::grpc::GrpcOptions::from_env();
  if (tessera::comms::tcp_rank(opts.rank)) opts.unix_local = false;
  tessera::comms::g_transport = std::make_shared<tessera::comms::grpc::GrpcTransport>(opts);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (opts.rank != 0) delete listeners.Release(listeners.default_result_printer());
  int rc = RUN_ALL_TESTS();
  tessera::comms::g_transport.reset();
  return rc;
}
