// The collective grid over the grpc transport, one process per rank on 127.0.0.1, started by
// tests/comms/run_ranks.sh (TESSERA_RANK / TESSERA_WORLD_SIZE / TESSERA_COORDINATOR). Each
// process checks the nodes it hosts; failure counts are summed over the ranks with a
// tessera all-reduce, so every rank reports the same verdict; rank 0 prints.
#include "grid.h"

#include <tessera/comms/grpc/transport.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <csignal>
#include <cstdlib>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>
#include <thread>

namespace tessera::comms {
namespace {

std::shared_ptr<grpc::GrpcTransport> g_transport;

bool listed(const char* var, int r) {
  const char* v = std::getenv(var);
  return v && ("," + std::string(v) + ",").find("," + std::to_string(r) + ",") != std::string::npos;
}
// What rank r was told: TESSERA_GRPC_LOCAL (cma when unset), unless it is one of the ranks in
// TESSERA_TEST_TCP_RANKS (told tcp) or TESSERA_TEST_UNIX_RANKS (told unix).
std::string local_mode(int r) {
  if (listed("TESSERA_TEST_TCP_RANKS", r)) return "tcp";
  if (listed("TESSERA_TEST_UNIX_RANKS", r)) return "unix";
  const char* local = std::getenv("TESSERA_GRPC_LOCAL");
  return local && *local ? local : "cma";
}

// Whether this machine lets a process read a sibling's memory (process_vm_readv; containers may
// forbid it): a forked child's word is read back. Where it cannot, "cma" ranks must fall back to
// the Unix socket, and the tests expect that instead.
bool cma_allowed() {
  static const bool allowed = [] {
    static volatile uint64_t word = 0;
    word = 0x5eed5eed12345678ull ^ static_cast<uint64_t>(::getpid());
    int ready[2];
    if (::pipe(ready) != 0) return false;
    pid_t child = ::fork();
    if (child == 0) {
      char c = 1;
      (void)!::write(ready[1], &c, 1);
      ::pause();
      ::_exit(0);
    }
    char c;
    (void)!::read(ready[0], &c, 1);
    uint64_t got = 0;
    iovec local{&got, sizeof got}, remote{const_cast<uint64_t*>(&word), sizeof got};
    const bool ok = ::process_vm_readv(child, &local, 1, &remote, 1, 0) == static_cast<ssize_t>(sizeof got) && got == word;
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    ::close(ready[0]);
    ::close(ready[1]);
    return ok;
  }();
  return allowed;
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

// Ranks started on one machine read each other's large chunks from memory (cma) and send the
// rest over Unix sockets; "unix" keeps every byte on the socket, "tcp" uses TCP. A pair takes
// the plainer route of its two ends. ctest runs this binary with each setting, so the grid above
// covers every route, and once with all three in one job (TESSERA_TEST_*_RANKS).
TEST(GrpcRoutes, CoLocatedPeersReadMemoryOrUseUnixSocketsAsTold) {
  const std::string me = local_mode(g_transport->rank());
  for (int p = 0; p < g_transport->size(); ++p) {
    const std::string them = local_mode(p);
    const std::string want = p == g_transport->rank()           ? "self"
                             : me == "tcp" || them == "tcp"     ? "tcp"
                             : me == "cma" && them == "cma" && cma_allowed() ? "cma"
                                                                : "unix";
    EXPECT_EQ(g_transport->route(p), want) << "peer " << p;
  }
  EXPECT_THROW(g_transport->route(g_transport->size()), IndexError);
}

// The cost model's inputs are the same on every rank (else ranks could choose different
// algorithms): the Unix-socket figures only when every rank is reached that way, the memory
// figures only when every pair reads each other's memory.
TEST(GrpcRoutes, EveryRankSeesTheSameCosts) {
  bool any_tcp = false, all_cma = true;
  for (int p = 0; p < g_transport->size(); ++p) {
    any_tcp = any_tcp || local_mode(p) == "tcp";
    all_cma = all_cma && local_mode(p) == "cma";
  }
  all_cma = all_cma && cma_allowed();
  const int alpha_us = static_cast<int>(g_transport->alpha() * 1e6 + 0.5);
  const int beta_mbs = static_cast<int>(g_transport->beta() / 1e6 + 0.5);
  EXPECT_EQ(alpha_us, any_tcp ? 51 : 43);
  EXPECT_EQ(beta_mbs, any_tcp ? 1500 : all_cma ? 4300 : 2000);
  EXPECT_EQ(sum_over_ranks(alpha_us), alpha_us * g_transport->size());
  EXPECT_EQ(sum_over_ranks(beta_mbs), beta_mbs * g_transport->size());
}

// One thread serves every stream, whatever the number of peers (the synchronous design had three
// per peer): the transport's threads are "tsr-progress", plus "tsr-listen" where co-located
// peers connect over Unix sockets.
TEST(GrpcTransport, OneThreadServesEveryStream) {
  std::map<std::string, int> ours;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream f(task.path() / "comm");
    std::string name;
    std::getline(f, name);
    if (name.rfind("tsr-", 0) == 0) ++ours[name];
  }
  const bool listens = local_mode(g_transport->rank()) != "tcp";
  std::map<std::string, int> want{{"tsr-progress", 1}};
  if (listens) want["tsr-listen"] = 1;
  EXPECT_EQ(ours, want);
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

std::vector<uint32_t> numbered(size_t n, uint32_t seed) {
  std::vector<uint32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint32_t>(i * 2654435761u) ^ seed;
  return v;
}

// A large message whose receive is posted late: between ranks that read each other's memory it
// waits in the sender (its send completes only once the receive is posted and has read it);
// over a socket it is received into a buffer and acknowledged at once. Either way the bytes
// arrive intact.
TEST(GrpcTransport, LateReceiveOfALargeMessage) {
  if (g_transport->rank() > 1) return;
  const size_t n = (3 << 20) / sizeof(uint32_t);
  const auto deadline = [] { return deadline_after(std::chrono::seconds(30)); };
  const bool in_memory = g_transport->route(1 - g_transport->rank()) == "cma";
  if (g_transport->rank() == 0) {
    auto data = numbered(n, 7);
    auto send = g_transport->isend(1, 2001, data.data(), n * sizeof(uint32_t));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // rank 1 posts after 600 ms
    if (in_memory) {
      EXPECT_FALSE(send->test()) << "completed before its receive was posted";
    }
    ASSERT_TRUE(send->wait(deadline()));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    std::vector<uint32_t> got(n, 0);
    ASSERT_TRUE(g_transport->irecv(0, 2001, got.data(), n * sizeof(uint32_t))->wait(deadline()));
    EXPECT_TRUE(got == numbered(n, 7));
  }
}

// Receives posted in another order than the sends (tag B before tag A, both large and late):
// both arrive intact and both sends complete, whichever acknowledgement comes first.
TEST(GrpcTransport, LargeMessagesReceivedOutOfOrder) {
  if (g_transport->rank() > 1) return;
  const size_t n = (1 << 20) / sizeof(uint32_t);
  const auto deadline = [] { return deadline_after(std::chrono::seconds(30)); };
  if (g_transport->rank() == 0) {
    auto a = numbered(n, 1), b = numbered(n, 2);
    auto sa = g_transport->isend(1, 3001, a.data(), n * sizeof(uint32_t));
    auto sb = g_transport->isend(1, 3002, b.data(), n * sizeof(uint32_t));
    ASSERT_TRUE(sb->wait(deadline()));
    ASSERT_TRUE(sa->wait(deadline()));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<uint32_t> a(n, 0), b(n, 0);
    ASSERT_TRUE(g_transport->irecv(0, 3002, b.data(), n * sizeof(uint32_t))->wait(deadline()));
    ASSERT_TRUE(g_transport->irecv(0, 3001, a.data(), n * sizeof(uint32_t))->wait(deadline()));
    EXPECT_TRUE(a == numbered(n, 1));
    EXPECT_TRUE(b == numbered(n, 2));
  }
}

// A large and a small message with the same tag, both received late and in order: each send
// completes only for its own message (acks name their message, not just the tag), both arrive
// intact.
TEST(GrpcTransport, SameTagLargeThenSmall) {
  if (g_transport->rank() > 1) return;
  const size_t big = (1 << 20) / sizeof(uint32_t), small = 256;
  const auto deadline = [] { return deadline_after(std::chrono::seconds(30)); };
  const bool in_memory = g_transport->route(1 - g_transport->rank()) == "cma";
  if (g_transport->rank() == 0) {
    auto a = numbered(big, 5), b = numbered(small, 6);
    auto sa = g_transport->isend(1, 5001, a.data(), big * sizeof(uint32_t));
    auto sb = g_transport->isend(1, 5001, b.data(), small * sizeof(uint32_t));
    ASSERT_TRUE(sb->wait(deadline()));  // eager: complete once gRPC has it
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // rank 1 posts after 400 ms
    if (in_memory) {
      EXPECT_FALSE(sa->test()) << "the small message's ack completed the large send";
    }
    ASSERT_TRUE(sa->wait(deadline()));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    std::vector<uint32_t> a(big, 0), b(small, 0);
    ASSERT_TRUE(g_transport->irecv(0, 5001, a.data(), big * sizeof(uint32_t))->wait(deadline()));
    ASSERT_TRUE(g_transport->irecv(0, 5001, b.data(), small * sizeof(uint32_t))->wait(deadline()));
    EXPECT_TRUE(a == numbered(big, 5));
    EXPECT_TRUE(b == numbered(small, 6));
  }
}

// A receive of the wrong size fails with a RemoteError naming the mismatch. The sender's send
// fails the same way when the receiver refuses the message: always between ranks that read
// memory (nothing is taken before the receive is posted); over a socket when the receive was
// posted before the bytes arrived (bytes that arrived first were acknowledged on arrival). The
// pair goes on working afterwards, after the failed requests are gone.
TEST(GrpcTransport, LateReceiveOfTheWrongSizeFailsBothEnds) {
  if (g_transport->rank() > 1) return;
  const size_t n = (1 << 20) / sizeof(uint32_t);
  const auto deadline = [] { return deadline_after(std::chrono::seconds(30)); };
  const bool in_memory = g_transport->route(1 - g_transport->rank()) == "cma";
  if (g_transport->rank() == 0) {
    auto a = numbered(n, 3);
    {
      auto s = g_transport->isend(1, 4001, a.data(), n * sizeof(uint32_t));
      try {
        const bool done = s->wait(deadline());
        EXPECT_TRUE(done);
        EXPECT_FALSE(in_memory) << "the send of a refused message completed";
      } catch (const RemoteError& e) {
        EXPECT_NE(std::string(e.what()).find("size mismatch"), std::string::npos) << e.what();
      }
    }
    ASSERT_TRUE(g_transport->isend(1, 4002, a.data(), n * sizeof(uint32_t))->wait(deadline()));
  } else {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::vector<uint32_t> got(n, 0);
    try {
      g_transport->irecv(0, 4001, got.data(), n * sizeof(uint32_t) / 2)->wait(deadline());
      ADD_FAILURE() << "a receive of the wrong size completed";
    } catch (const RemoteError& e) {
      EXPECT_NE(std::string(e.what()).find("size mismatch"), std::string::npos) << e.what();
    }
    ASSERT_TRUE(g_transport->irecv(0, 4002, got.data(), n * sizeof(uint32_t))->wait(deadline()));
    EXPECT_TRUE(got == numbered(n, 3));
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
  const std::string mode = tessera::comms::local_mode(opts.rank);
  opts.unix_local = mode != "tcp";
  opts.cma_local = mode == "cma";
  tessera::comms::g_transport = std::make_shared<tessera::comms::grpc::GrpcTransport>(opts);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (opts.rank != 0) delete listeners.Release(listeners.default_result_printer());
  int rc = RUN_ALL_TESTS();
  tessera::comms::g_transport.reset();
  return rc;
}
