// The collective grid over the mpi transport, run under mpirun (-np 2, 3, 4): every rank runs
// every test and checks the nodes it hosts; rank 0 prints, and the exit code is the same on all
// ranks (any rank's failure fails all). The native algorithm (MPI_Iallreduce etc.) joins the grid.
#include "grid.h"

#include <tessera/comms/mpi/transport.h>

#include <gtest/gtest.h>

#include <memory>

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
  for (size_t i = 0; i < mine.size() && i < 10; ++i) ADD_FAILURE() << "rank " << g_transport->rank() << ": " << mine[i];
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
