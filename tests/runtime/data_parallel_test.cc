// Data parallelism over loopback ranks (threads): a 2x2 and a 1x4 mesh, with one or two nodes
// per rank, train like a single node on the same global batch (up to summation order).
#include <tessera/comms/loopback/transport.h>
#include <tessera/runtime/data_parallel.h>
#include <tessera/runtime/models.h>
#include <tessera/runtime/trainer.h>

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <thread>

namespace tessera {
namespace {

TrainOptions base(int64_t batch) {
  TrainOptions o;
  o.precision = Precision::fp32;
  o.batch_size = batch;
  o.opt.lr = 0.1;
  o.opt.momentum = 0.9;
  o.progress = false;
  o.max_steps = 20;
  o.epochs = 2;
  o.seed = 4;
  return o;
}

std::vector<float> flat_params(const Trainer& t) {
  std::vector<float> out;
  for (const auto& [n, p] : t.parameters()) {
    auto v = p->value.to_f32_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

struct Case {
  const char* mesh;
  int ranks;
  const char* algo;
};

class DataParallel : public ::testing::TestWithParam<Case> {};

TEST_P(DataParallel, MatchesOneNodeOnTheGlobalBatch) {
  Dataset train = make_synthetic_classification(2048, 16, 4, 9, 1.0);
  Dataset test = make_synthetic_classification(128, 16, 4, 10, 1.0);
  const int64_t global = 64;
  std::ostringstream log;
  Trainer single(std::make_shared<models::Mlp>(3, 16, 32, 4), {16}, 4, base(global));
  auto ref = single.fit(train, test, log);

  comms::Mesh mesh = comms::Mesh::parse(GetParam().mesh);
  const int nodes = mesh.rows() * mesh.cols(), ranks = GetParam().ranks;
  auto hub = comms::loopback::Hub::create(ranks);
  std::vector<std::vector<float>> params(ranks);
  std::vector<std::vector<EpochReport>> reports(ranks);
  std::vector<std::exception_ptr> errors(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] {
      try {
        comms::MeshComm comm(mesh, hub->transport(r));
        GradientSyncOptions so;
        so.bucket_bytes = 1024;  // several buckets, some launched mid-backward
        so.algorithm = comms::algorithm_from_name(GetParam().algo);
        GradientSync sync(comm, so);
        TrainOptions o = base(global / nodes);
        o.world_nodes = nodes;
        o.hosted_nodes = comm.local_nodes();
        o.grad_sync = &sync;
        o.chief = r == 0;
        Trainer t(std::make_shared<models::Mlp>(3, 16, 32, 4), {16}, 4, o);
        std::ostringstream out;
        reports[r] = t.fit(train, test, out);
        params[r] = flat_params(t);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  // Every rank holds the same weights, bit for bit (all apply the same averaged gradient).
  for (int r = 1; r < ranks; ++r) EXPECT_EQ(params[r], params[0]) << "rank " << r;
  // And they match the single node up to float summation order: stated tolerance 1e-4
  // relative on the loss, 1e-3 absolute on the weights after 20 steps.
  ASSERT_EQ(reports[0].size(), ref.size());
  EXPECT_NEAR(reports[0].back().train_loss, ref.back().train_loss, 1e-4 * std::fabs(ref.back().train_loss));
  EXPECT_EQ(reports[0].back().test_accuracy, ref.back().test_accuracy);
  auto single_params = flat_params(single);
  double worst = 0;
  for (size_t i = 0; i < single_params.size(); ++i) worst = std::max(worst, std::fabs(double(params[0][i]) - single_params[i]));
  EXPECT_LT(worst, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Meshes, DataParallel,
                         ::testing::Values(Case{"2x2", 4, "auto"}, Case{"1x4", 4, "ring"}, Case{"2x2", 2, "mesh2d"},
                                           Case{"2x2", 1, "ring"}, Case{"1x4", 2, "auto"}),
                         [](const auto& i) {
                           return std::string(i.param.mesh) + "_" + std::to_string(i.param.ranks) + "ranks_" + i.param.algo;
                         });

// A bucket whose all-reduce fails (the other rank never joins): finish() rethrows the error,
// the buckets after it are skipped, and a GradientSync destroyed in the middle of a step (a
// trainer that threw) returns once the collective under way has met its deadline.
TEST(GradientSync, AFailedBucketIsRethrownAndAnAbandonedStepEnds) {
  comms::Mesh mesh = comms::Mesh::parse("1x2");
  auto hub = comms::loopback::Hub::create(2);  // rank 1 never takes part
  comms::CommOptions co;
  co.timeout = std::chrono::milliseconds(200);
  comms::MeshComm comm(mesh, hub->transport(0), co);
  Tensor g = Tensor::full({256}, 1.0);
  const std::vector<int64_t> sizes = {256, 256};  // two 1 KiB buckets
  GradientSyncOptions small;
  small.bucket_bytes = 1024;
  {
    GradientSync sync(comm, small);
    sync.begin(sizes);
    sync.ready(0, 1, g);  // the backward's order: the last gradient first
    sync.ready(0, 0, g);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_THROW(sync.finish({Tensor::zeros({256}), Tensor::zeros({256})}, 0.0), TimeoutError);
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  }
  comms::MeshComm comm2(mesh, comms::loopback::Hub::create(2)->transport(0), co);
  auto t0 = std::chrono::steady_clock::now();
  {
    GradientSync sync(comm2, small);
    sync.begin(sizes);
    sync.ready(0, 1, g);  // the first bucket is full and under way; the second never fills
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

}  // namespace
}  // namespace tessera
