// The collective grid over the mpi transport, run under mpirun (-np 2, 3, 4): every rank runs
// every test and checks the nodes it hosts; rank 0 prints, and the exit code is the same on all
// ranks (any rank's failure fails all). The native algorithm (MPI_Iallreduce etc.) joins the grid.
#include "grid.h"

#include <tessera/comms/mpi/transport.h>

#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <thread>

namespace tessera::comms {
namespace {

std::shared_ptr<mpi::MpiTransport> g_transport;

std::vector<std::string> meshes_for(int p) {
  std::vector<std::string> out;
  for (std::string s : {"1x" + std::to_string(p), std::to_string(p) + "x1", std::string("2x2"),
                        std::string("3x5"), std::string("2x6"), std::string("4x4")}) {
    Mesh m = Mesh::parse(s);
    if (m.size() % p == 0 && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  }
  return out;
}

// Collect failures from every rank on every rank.
void expect_all_ranks_ok(const std::vector<std::string>& mine, const std::string& what) {
  int bad = static_cast<int>(mine.size()), any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_SUM, g_transport->comm());
  // Only rank 0 prints gtest's report: the others' failures go to stderr.
  for (size_t i = 0; i < mine.size() && i < 10; ++i) {
    ADD_FAILURE() << "rank " << g_transport->rank() << ": " << mine[i];
    if (g_transport->rank() != 0) std::fprintf(stderr, "rank %d: %s\n", g_transport->rank(), mine[i].c_str());
  }
  EXPECT_EQ(any, 0) << what << ": " << any << " failure(s) over all ranks";
}

TEST(MpiGrid, EveryCaseExactOnEveryMesh) {
  int p = g_transport->size();
  for (const std::string& ms : meshes_for(p)) {
    Mesh mesh = Mesh::parse(ms);
    MeshComm comm(mesh, g_transport);
    auto cases = testing::grid(/*big=*/ms == "2x2" || ms == "1x" + std::to_string(p), false);
    bool one_node = comm.placement().nodes_per_rank() == 1;
    std::vector<testing::Case> native;
    for (const auto& k : cases) {
      bool ok = k.kind == OpKind::allreduce || k.kind == OpKind::broadcast ||
                (one_node && (k.kind == OpKind::reduce_scatter || k.kind == OpKind::allgather));
      if (ok && k.algorithm == Algorithm::ring && k.op == ReduceOp::sum) {
        testing::Case n = k;
        n.algorithm = Algorithm::native;
        native.push_back(n);
      }
    }
    cases.insert(cases.end(), native.begin(), native.end());
    std::vector<std::string> failures;
    for (const auto& k : cases) {
      try {
        std::string e = testing::run_case(comm, k);
        if (!e.empty()) failures.push_back(ms + ": " + e);
      } catch (const std::exception& e) {
        failures.push_back(ms + ": " + k.str() + ": threw " + e.what());
        break;  // the communicator is broken after a CommError
      }
    }
    expect_all_ranks_ok(failures, "mesh " + ms + " over " + std::to_string(p) + " ranks, " +
                                      std::to_string(cases.size()) + " cases");
    // The emulated link table gathers on rank 0.
    LinkStats all = gather_link_stats(comm);
    if (comm.rank() == 0) {
      EXPECT_GT(all.total_link_bytes(), 0u);
    }
  }
}

TEST(MpiGrid, NativeIsChosenOnlyWhenCheaperAndNamesItself) {
  MeshComm comm(Mesh::parse("1x" + std::to_string(g_transport->size())), g_transport);
  auto ch = choose_algorithm(comm.world(), OpKind::allreduce, 1 << 20);
  EXPECT_GE(ch.native_s, 0) << ch.explain();
  std::vector<float> v(1000, 1.0f);
  AllreduceOptions o;
  o.count = v.size();
  o.inputs = {v.data()};
  o.outputs = {v.data()};
  o.algorithm = Algorithm::native;
  auto rec = allreduce(comm.world(), o);
  EXPECT_EQ(rec.algorithm, "native");
  EXPECT_EQ(v[999], static_cast<float>(g_transport->size()));
  EXPECT_GT(rec.payload_bytes, 0u);  // charged as the ring would have been
}

TEST(MpiGrid, TagsAboveTheMpiLimitAreRejected) {
  MeshComm comm(Mesh::parse("2x" + std::to_string(g_transport->size())), g_transport);
  EXPECT_LE(comm.max_user_tag(), g_transport->max_tag());
  std::vector<float> v(8, 1.0f);
  AllreduceOptions o;
  o.count = 8;
  for (size_t i = 0; i < comm.local_nodes().size(); ++i) {
    o.inputs.push_back(v.data());
    o.outputs.push_back(v.data());
  }
  o.tag = comm.max_user_tag() + 1;
  EXPECT_THROW(allreduce(comm.world(), o), ValueError);
}


// ---- shared communication memory: sends from it to a rank of this host go direct ----

std::vector<char> pattern(size_t n, int seed) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<char>((i * 131 + static_cast<size_t>(seed) * 7) % 251);
  return v;
}

bool wait_for(Request& r) { return r.wait(deadline_after(std::chrono::seconds(20))); }

// Runs a rank's part of a test, turning an exception into a failure every rank reports.
void guarded(std::vector<std::string>& bad, const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    bad.push_back(std::string("rank ") + std::to_string(g_transport->rank()) + " threw: " + e.what());
  }
}

TEST(MpiShared, DirectAndOrdinaryMessagesMatchInPostingOrder) {
  auto& t = *g_transport;
  ASSERT_EQ(t.host_ranks(), t.size()) << "mpirun on one machine";
  auto mem = t.allocate_shared(1 << 20);  // every rank: the allocation is collective
  char* shm = static_cast<char*>(mem->data());
  const size_t kBig = 64 << 10, kMin = mpi::MpiTransport::kDirectMinBytes;
  std::vector<std::string> bad;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) bad.push_back(what);
  };
  guarded(bad, [&] {
  if (t.rank() == 0) {
    const uint64_t sends0 = t.direct_sends();
    auto a = pattern(kBig, 1), b = pattern(kBig, 2), c = pattern(kMin, 3), d = pattern(100, 4);
    auto e = pattern(kBig, 5), f = pattern(kBig, 6);
    std::memcpy(shm, a.data(), kBig);                    // A: shared memory, direct
    std::memcpy(shm + kBig, c.data(), kMin);             // C: exactly the threshold, direct
    std::memcpy(shm + kBig + kMin, d.data(), d.size());  // D: small, an ordinary message
    std::memcpy(shm + 2 * kBig + kMin, e.data(), kBig);
    std::memcpy(shm + 3 * kBig + kMin, f.data(), kBig);
    std::vector<RequestPtr> rs;
    rs.push_back(t.isend(1, 5, shm, kBig));
    rs.push_back(t.isend(1, 5, b.data(), kBig));  // B: heap, ordinary
    rs.push_back(t.isend(1, 5, shm + kBig, kMin));
    rs.push_back(t.isend(1, 5, shm + kBig + kMin, d.size()));
    rs.push_back(t.isend(1, 7, shm + 2 * kBig + kMin, kBig));
    rs.push_back(t.isend(1, 8, shm + 3 * kBig + kMin, kBig));  // acknowledged before tag 7's
    for (auto& r : rs) check(wait_for(*r), "a send did not complete");
    check(t.direct_sends() - sends0 == 4, "rank 0 made " + std::to_string(t.direct_sends() - sends0) +
                                              " direct sends, not 4 (A, C and tags 7 and 8)");
  } else if (t.rank() == 1) {
    const uint64_t recvs0 = t.direct_recvs();
    std::vector<char> a(kBig), c(kMin), d(100), e(kBig), f(kBig);
    char* b = shm;  // into shared memory: the receiver's memory does not matter
    auto ra = t.irecv(0, 5, a.data(), kBig);
    auto rb = t.irecv(0, 5, b, kBig);
    auto rc = t.irecv(0, 5, c.data(), kMin);
    auto rd = t.irecv(0, 5, d.data(), d.size());
    // Waited for out of posting order: matching still follows the posting order.
    check(wait_for(*rd) && wait_for(*rb) && wait_for(*rc) && wait_for(*ra), "a receive did not complete");
    check(a == pattern(kBig, 1), "A arrived wrong");
    check(std::vector<char>(b, b + kBig) == pattern(kBig, 2), "B arrived wrong");
    check(c == pattern(kMin, 3), "C arrived wrong");
    check(d == pattern(100, 4), "D arrived wrong");
    auto rf = t.irecv(0, 8, f.data(), kBig);
    check(wait_for(*rf), "tag 8 did not arrive");
    auto re = t.irecv(0, 7, e.data(), kBig);
    check(wait_for(*re), "tag 7 did not arrive");
    check(e == pattern(kBig, 5) && f == pattern(kBig, 6), "tags 7/8 arrived wrong");
    check(t.direct_recvs() - recvs0 == 4, "rank 1 served " + std::to_string(t.direct_recvs() - recvs0) +
                                              " direct receives, not 4");
  }
  });
  expect_all_ranks_ok(bad, "direct and ordinary messages");
}

TEST(MpiShared, ADirectSendCompletesOnlyOnceTheReceiverHasCopied) {
  auto& t = *g_transport;
  auto mem = t.allocate_shared(64 << 10);
  char* shm = static_cast<char*>(mem->data());
  const size_t n = 64 << 10;
  std::vector<std::string> bad;
  if (t.rank() == 0) {
    auto want = pattern(n, 9);
    std::memcpy(shm, want.data(), n);
    auto r = t.isend(1, 21, shm, n);
    auto until = Clock::now() + std::chrono::milliseconds(200);
    while (Clock::now() < until) {
      if (r->test()) {
        bad.push_back("the send completed before rank 1 posted its receive");
        break;
      }
    }
    if (!wait_for(*r)) bad.push_back("the send never completed");
    std::memset(shm, 0, n);  // free to reuse now
  } else if (t.rank() == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    std::vector<char> got(n);
    auto r = t.irecv(0, 21, got.data(), n);
    if (!wait_for(*r)) bad.push_back("the receive never completed");
    if (got != pattern(n, 9)) bad.push_back("rank 1 received other bytes than rank 0 sent");
  }
  expect_all_ranks_ok(bad, "direct send completion");
}

TEST(MpiShared, ASizeMismatchFailsBothSides) {
  auto& t = *g_transport;
  auto mem = t.allocate_shared(64 << 10);
  std::vector<std::string> bad;
  auto expect_mismatch = [&](Request& r, const char* side) {
    try {
      wait_for(r);
      bad.push_back(std::string(side) + ": no error");
    } catch (const RemoteError& e) {
      if (!std::strstr(e.what(), "size mismatch")) bad.push_back(std::string(side) + ": " + e.what());
    }
  };
  if (t.rank() == 0) {
    auto r = t.isend(1, 23, mem->data(), 64 << 10);
    expect_mismatch(*r, "sender");
  } else if (t.rank() == 1) {
    std::vector<char> small(32 << 10);
    auto r = t.irecv(0, 23, small.data(), small.size());
    expect_mismatch(*r, "receiver");
  }
  expect_all_ranks_ok(bad, "size mismatch of a direct send");
}

TEST(MpiShared, AnAllocationThatCannotBeMadeFailsOnEveryRankAlike) {
  auto& t = *g_transport;
  std::vector<std::string> bad;
  try {
    t.allocate_shared(size_t{1} << 42);  // 4 TiB: more than /dev/shm holds
    bad.push_back("a 4 TiB allocation succeeded");
  } catch (const OutOfMemoryError& e) {
    if (!std::strstr(e.what(), "rank ") || !std::strstr(e.what(), "/dev/shm"))
      bad.push_back(std::string("unclear error: ") + e.what());
  } catch (const std::exception& e) {
    bad.push_back(std::string("wrong error: ") + e.what());
  }
  // The ranks still agree on what comes next: a small allocation, and a send from it.
  guarded(bad, [&] {
    auto mem = t.allocate_shared(64 << 10);
    const uint64_t before = t.direct_sends();
    if (t.rank() == 0) {
      auto r = t.isend(1, 25, mem->data(), 64 << 10);
      if (!wait_for(*r)) bad.push_back("the send after a failed allocation did not complete");
      if (t.direct_sends() != before + 1) bad.push_back("the send after a failed allocation did not go direct");
    } else if (t.rank() == 1) {
      std::vector<char> got(64 << 10, 1);
      auto r = t.irecv(0, 25, got.data(), got.size());
      if (!wait_for(*r) || got != std::vector<char>(64 << 10, 0)) bad.push_back("the send after a failed allocation arrived wrong");
    }
  });
  expect_all_ranks_ok(bad, "failed allocation");
}

TEST(MpiShared, AConsumingReceiveReadsADirectSendWhereItLies) {
  auto& t = *g_transport;
  auto mem = t.allocate_shared(64 << 10);
  const size_t n = 64 << 10;
  std::vector<std::string> bad;
  guarded(bad, [&] {
    if (t.rank() == 0) {
      auto want = pattern(n, 11);
      std::memcpy(mem->data(), want.data(), n);
      auto heap = pattern(n, 12);
      auto a = t.isend(1, 27, mem->data(), n);  // direct
      auto b = t.isend(1, 27, heap.data(), n);  // ordinary
      if (!wait_for(*a) || !wait_for(*b)) bad.push_back("a send did not complete");
    } else if (t.rank() == 1) {
      std::vector<char> buf_a(n), buf_b(n);
      int calls_a = 0, calls_b = 0;
      bool in_buf_a = true, in_buf_b = false, same_a = false, same_b = false;
      auto ra = t.irecv_consume(0, 27, buf_a.data(), n, [&](const void* p) {
        ++calls_a;
        in_buf_a = p == buf_a.data();
        same_a = std::memcmp(p, pattern(n, 11).data(), n) == 0;
      });
      auto rb = t.irecv_consume(0, 27, buf_b.data(), n, [&](const void* p) {
        ++calls_b;
        in_buf_b = p == buf_b.data();
        same_b = std::memcmp(p, pattern(n, 12).data(), n) == 0;
      });
      if (!wait_for(*rb) || !wait_for(*ra)) bad.push_back("a receive did not complete");
      ra->test();  // completed requests do not consume again
      rb->wait(deadline_after(std::chrono::seconds(1)));
      if (calls_a != 1 || calls_b != 1) bad.push_back("consume called " + std::to_string(calls_a) + " and " +
                                                      std::to_string(calls_b) + " times, not once each");
      if (in_buf_a) bad.push_back("the direct send was copied into the buffer first");
      if (!in_buf_b) bad.push_back("the ordinary message was not consumed from the buffer");
      if (!same_a || !same_b) bad.push_back("consume saw other bytes than were sent");
    }
  });
  expect_all_ranks_ok(bad, "consuming receives");
}

TEST(MpiShared, AReceiveDroppedAfterItsDescriptorArrivedFailsTheSenderAtOnce) {
  auto& t = *g_transport;
  auto mem = t.allocate_shared(64 << 10);
  const size_t n = 64 << 10;
  std::vector<std::string> bad;
  guarded(bad, [&] {
    if (t.rank() == 0) {
      auto r = t.isend(1, 29, mem->data(), n);
      auto t0 = Clock::now();
      try {
        bad.push_back(wait_for(*r) ? "the send completed although the receive was dropped"
                                   : "the sender was not told that the receive was dropped");
      } catch (const RemoteError& e) {
        if (!std::strstr(e.what(), "gave up")) bad.push_back(std::string("unclear error: ") + e.what());
        if (Clock::now() - t0 > std::chrono::seconds(5)) bad.push_back("the sender learnt it only after 5 s");
      }
    } else if (t.rank() == 1) {
      std::vector<char> buf(n);
      auto r = t.irecv(0, 29, buf.data(), n);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the descriptor arrives
      for (int i = 0; i < 100; ++i) {  // MPI progress (not this request's test): it matches
        int flag = 0;
        MPI_Iprobe(0, 12345, t.comm(), &flag, MPI_STATUS_IGNORE);
      }
      r.reset();  // dropped without a wait
    }
  });
  expect_all_ranks_ok(bad, "dropped receive");
}

TEST(MpiShared, AllreduceOnSharedMemoryIsExactAndReadsDirectly) {
  auto& t = *g_transport;
  const int p = t.size();
  std::vector<std::string> bad;
  for (std::string ms : {"1x" + std::to_string(p), std::string("2x") + std::to_string(p)}) {
    MeshComm comm(Mesh::parse(ms), g_transport);
    const size_t L = comm.local_nodes().size(), count = (1 << 18) + 7;
    for (bool in_place : {true, false}) {
      auto mem = t.allocate_shared(2 * L * count * sizeof(float));
      float* base = static_cast<float*>(mem->data());
      AllreduceOptions o;
      o.count = count;
      o.algorithm = Algorithm::mesh2d;
      o.chunk_bytes = 64 << 10;  // several segments per step
      for (size_t l = 0; l < L; ++l) {
        float* in = base + l * count;
        float* out = in_place ? in : base + (L + l) * count;
        for (size_t i = 0; i < count; ++i) in[i] = static_cast<float>((comm.local_nodes()[l] + i) % 5);
        o.inputs.push_back(in);
        o.outputs.push_back(out);
      }
      const uint64_t before = t.direct_sends();
      allreduce(comm.world(), o);
      const int n = comm.mesh().size();
      size_t wrong = 0;
      for (size_t l = 0; l < L; ++l) {
        for (size_t i = 0; i < count; ++i) {
          float want = 0;
          for (int m = 0; m < n; ++m) want += static_cast<float>((m + i) % 5);
          wrong += o.outputs[l] != nullptr && static_cast<float*>(o.outputs[l])[i] != want;
        }
      }
      const std::string what = ms + (in_place ? " in place" : " out of place");
      if (wrong) bad.push_back(what + ": " + std::to_string(wrong) + " wrong elements");
      if (t.direct_sends() == before) bad.push_back(what + ": no send went direct");
    }
  }
  expect_all_ranks_ok(bad, "all-reduce on shared memory");
}

}  // namespace
}  // namespace tessera::comms

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  tessera::comms::g_transport = std::make_shared<tessera::comms::mpi::MpiTransport>();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (tessera::comms::g_transport->rank() != 0) delete listeners.Release(listeners.default_result_printer());
  int rc = RUN_ALL_TESTS();
  int worst = 0;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, tessera::comms::g_transport->comm());
  tessera::comms::g_transport.reset();
  return worst;
}
