#include <tessera/runtime/train_command.h>

#include <tessera/core/data.h>
#include <tessera/runtime/models.h>
#include <tessera/runtime/trainer.h>
#include <tessera/runtime/data_parallel.h>
#include <tessera/comms/communicator.h>
#include <tessera/comms/loopback/transport.h>
#include <tessera/core/op_registry.h>
#if defined(TESSERA_WITH_MPI)
#include <tessera/comms/mpi/transport.h>
#endif
#if defined(TESSERA_WITH_GRPC)
#include <tessera/comms/grpc/transport.h>
#endif

#include <oneapi/tbb/global_control.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>

namespace tessera {

const char* kTrainUsage =
    "usage: tessera train [options]\n"
    "  --model NAME           mlp | cnn (default cnn)\n"
    "  --precision P          fp32 | bf16 | cfp8 (default bf16)\n"
    "  --epochs N             (default 1)\n"
    "  --batch-size B         (default 64)\n"
    "  --lr LR                learning rate (default 0.05)\n"
    "  --optimizer O          sgd | adamw (default sgd)\n"
    "  --momentum M           SGD momentum (default 0.9)\n"
    "  --nesterov             Nesterov momentum\n"
    "  --weight-decay WD      (default 0)\n"
    "  --schedule S           constant | step (x0.1 every epoch) | cosine (to 0 at the end) (default constant)\n"
    "  --warmup N             linear warmup steps (default 0)\n"
    "  --clip NORM            global gradient-norm clipping (default off)\n"
    "  --seed S               (default 1)\n"
    "  --checkpoint DIR       save a checkpoint after every epoch\n"
    "  --resume               continue from DIR's checkpoint\n"
    "  --metrics FILE         write JSON lines (steps and epochs)\n"
    "  --data DIR             Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)\n"
    "  --max-steps N          stop after N steps in total\n"
    "  --threads N            worker threads (default: all cores)\n"
    "  --cfp8-rounding R      nearest | stochastic (cfp8 operands; default nearest)\n"
    "  --cfp8-margin M        headroom in powers of two above the amax history (default 0)\n"
    "  --no-loss-scaling      disable dynamic loss scaling for bf16 / cfp8\n"
    "  --no-progress          no progress bar\n"
    "data parallel on an emulated mesh (the global batch is --batch-size per node):\n"
    "  --mesh M               RxC (e.g. 2x2) or a preset: node | d1 | tile | exapod | cpu:RxC\n"
    "  --transport T          loopback (ranks are threads of this process) | mpi (under mpirun)\n"
    "                         | grpc (under tessera launch) (default loopback)\n"
    "  --ranks R              loopback ranks; each hosts a block of nodes (default: one per node,\n"
    "                         at most 64)\n"
    "  --bucket-mb MB         gradient all-reduce bucket size (default 4)\n"
    "  --allreduce A          auto | ring | mesh2d | native (mpi only) (default auto: the cost model)\n"
    "  --links FILE           write the per-link table (CSV) after training\n";

namespace {

struct Args {
  const std::vector<std::string>& v;
  size_t i = 0;
  std::string value(const std::string& flag) {
    if (i + 1 >= v.size()) throw ValueError("option " + flag + " needs a value");
    return v[++i];
  }
};

int64_t to_int(const std::string& flag, const std::string& s, int64_t lo) {
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  TESSERA_CHECK(!s.empty() && *end == '\0' && v >= lo, "option ", flag, ": '", s, "' is not an integer >= ", lo);
  return v;
}
double to_double(const std::string& flag, const std::string& s, double lo) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  TESSERA_CHECK(!s.empty() && *end == '\0' && v >= lo, "option ", flag, ": '", s, "' is not a number >= ", lo);
  return v;
}

}  // namespace

namespace {

void print_summary(const Trainer& t, const std::vector<EpochReport>& reports, std::ostream& out) {
  if (reports.empty()) return;
  double best = 0, ips = 0;
  for (const auto& r : reports) {
    best = std::max(best, r.test_accuracy);
    ips += r.images_per_s;
  }
  out << "done: " << t.global_step() << " steps, final test accuracy " << 100 * reports.back().test_accuracy
      << "%, best " << 100 * best << "%, mean " << static_cast<int64_t>(ips / reports.size()) << " images/s";
  if (t.skipped_steps()) out << ", " << t.skipped_steps() << " steps skipped by loss scaling";
  out << "\npeak intermediate memory per step: " << t.train_executor().peak_bytes() / (1 << 20)
      << " MiB\ntime per op kind (training):\n" << t.train_executor().stats_table();
}

std::pair<Dataset, Dataset> load_data(const TrainOptions& o, const std::string& data_dir, bool chief) {
  if (chief) std::cout << "loading Fashion-MNIST from " << data_dir << "\n";
  return {load_fashion_mnist(data_dir, Split::train), load_fashion_mnist(data_dir, Split::test)};
}

// Every node takes --batch-size images of each global batch, so the training set must hold one.
void check_global_batch(const TrainOptions& o, int nodes, const Dataset& train) {
  const int64_t global = o.batch_size * static_cast<int64_t>(nodes);
  TESSERA_CHECK(global <= static_cast<int64_t>(train.size()), "a global batch of ", global, " images (",
                o.batch_size, " per node x ", nodes, " nodes) is larger than the training set of ",
                train.size(), "; use a smaller mesh or --batch-size");
}

int train_single(TrainOptions o, const std::string& data_dir) {
  auto [train, test] = load_data(o, data_dir, true);
  std::cout << "training " << o.model << " in " << precision_name(o.precision) << ": " << train.size()
            << " training / " << test.size() << " test images, batch " << o.batch_size << ", " << o.optimizer
            << " lr " << o.opt.lr << ", " << o.epochs << " epoch(s)\n";
  Trainer t(models::make_model(o.model, o.seed), {28, 28, 1}, 10, o);
  auto reports = t.fit(train, test, std::cout);
  print_summary(t, reports, std::cout);
  return 0;
}

// One rank of a data-parallel run. Returns the trainer's reports (chief only prints).
struct RankResult {
  std::string report;
  double seconds = 0;
  int64_t steps = 0;
  double flops_per_node_step = 0;
};

// A communication error over mpi or grpc (exit_on_comm_error) is printed at once and ends the
// process with status 1, before anything is torn down: with a peer dead or hung, MPI's
// finalize or gRPC's stream shutdown could wait long (for MPI, forever), and MPI may still
// write into the buffers of the calls that failed. The peers see this rank go and fail in
// turn; mpirun and tessera launch end the job. Loopback ranks are threads: they rethrow.
[[noreturn]] void exit_on(const CommError& e) {
  std::cout << std::flush;
  std::cerr << "tessera: error: " << e.what() << std::endl;
  std::_Exit(1);
}

RankResult run_rank(TrainOptions o, const Dataset& train, const Dataset& test, const comms::Mesh& mesh,
                    std::shared_ptr<comms::Transport> transport, const GradientSyncOptions& sync_opt,
                    const std::string& links_csv, bool exit_on_comm_error) {
  comms::MeshComm comm(mesh, std::move(transport));
  GradientSync sync(comm, sync_opt);
  o.world_nodes = mesh.rows() * mesh.cols();
  o.hosted_nodes = comm.local_nodes();
  o.grad_sync = &sync;
  o.chief = comm.rank() == 0;
  Trainer t(models::make_model(o.model, o.seed), {28, 28, 1}, 10, o);
  std::ostringstream out;
  if (o.chief) {
    out << "training " << o.model << " in " << precision_name(o.precision) << " data-parallel on a "
        << mesh.rows() << "x" << mesh.cols() << " mesh over " << comm.transport().name() << " (" << comm.ranks()
        << " rank(s)), global batch " << o.batch_size * o.world_nodes << " (" << o.batch_size << " per node)\n";
    std::cout << out.str() << std::flush;
    out.str("");
  }
  auto t0 = std::chrono::steady_clock::now();
  std::vector<EpochReport> reports;
  std::optional<comms::LinkStats> gathered;
  try {
    reports = t.fit(train, test, o.chief ? std::cout : out);
    gathered = comms::gather_link_stats(comm);
  } catch (const CommError& e) {
    if (exit_on_comm_error) exit_on(e);
    throw;
  }
  const comms::LinkStats& all = *gathered;
  RankResult res;
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.steps = t.global_step();
  for (int id = 0; id < t.train_graph().num_nodes(); ++id) res.flops_per_node_step += op_cost(t.train_graph(), id).flops;
  if (o.chief) {
    std::ostringstream r;
    print_summary(t, reports, r);
    double train_s = 0;
    for (const auto& rep : reports) train_s += rep.seconds;
    int64_t steps = std::max<int64_t>(res.steps, 1);
    double peak = mesh.node_spec().peak_flops(o.precision == Precision::fp32 ? DType::f32
                                              : o.precision == Precision::bf16 ? DType::bf16
                                                                               : DType::cfp8_e4m3);
    double comm_s = all.total_emulated_s() / steps;
    double compute_s = peak > 0 ? res.flops_per_node_step / peak : 0;
    r << "\ninterconnect (emulated on the mesh's link specs):\n" << all.summary() << all.top_links(10);
    char line[256];
    std::snprintf(line, sizeof line,
                  "step time: measured %.2f ms on this host; emulated %.3f ms on the mesh preset "
                  "(compute %.3f ms at %.0f GFLOP/s per node + all-reduce %.3f ms, not overlapped)\n",
                  1e3 * train_s / steps, 1e3 * (compute_s + comm_s), 1e3 * compute_s, peak / 1e9, 1e3 * comm_s);
    r << line;
    if (!links_csv.empty()) {
      all.write_csv(links_csv);
      r << "per-link table written to " << links_csv << "\n";
    }
    res.report = r.str();
  }
  return res;
}

int train_mesh(TrainOptions o, const std::string& data_dir, const comms::Mesh& mesh, const std::string& transport,
               int loopback_ranks, const GradientSyncOptions& sync_opt, const std::string& links_csv) {
  const int nodes = mesh.rows() * mesh.cols();
  if (transport == "loopback") {
    // Each loopback rank is a thread with its own trainer: one per node up to kMaxDefaultRanks,
    // beyond that the largest count of ranks up to it that tiles the mesh.
    constexpr int kMaxDefaultRanks = 64, kMaxRanks = 256;
    int ranks = loopback_ranks;
    for (int r = std::min(nodes, kMaxDefaultRanks); ranks <= 0 && r >= 1; --r) {
      try {
        comms::Placement::make(mesh, r);
        ranks = r;
      } catch (const ValueError&) {
      }
    }
    TESSERA_CHECK(ranks <= kMaxRanks, "option --ranks: ", ranks, " loopback ranks would be ", ranks,
                  " threads, each with its own model; use at most ", kMaxRanks, " (a rank hosts a block of nodes)");
    comms::Placement::make(mesh, ranks);  // a clear message if --ranks does not tile the mesh
    auto [train, test] = load_data(o, data_dir, true);
    check_global_batch(o, nodes, train);
    auto hub = comms::loopback::Hub::create(ranks);
    std::vector<RankResult> results(static_cast<size_t>(ranks));
    std::vector<std::exception_ptr> errors(static_cast<size_t>(ranks));
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        try {
          TrainOptions ro = o;
          ro.progress = o.progress && r == 0;
          results[r] = run_rank(ro, train, test, mesh, hub->transport(r), sync_opt, links_csv, false);
        } catch (...) {
          errors[r] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    for (auto& e : errors) {
      if (e) std::rethrow_exception(e);
    }
    std::cout << results[0].report;
    return 0;
  }
  std::shared_ptr<comms::Transport> t;
  if (transport == "mpi") {
#if defined(TESSERA_WITH_MPI)
    t = std::make_shared<comms::mpi::MpiTransport>();
#else
    TESSERA_THROW(NotImplementedError, "this build has no MPI transport (configure with -DTESSERA_WITH_MPI=ON)");
#endif
  } else {
#if defined(TESSERA_WITH_GRPC)
    t = std::make_shared<comms::grpc::GrpcTransport>(comms::grpc::GrpcOptions::from_env());
#else
    TESSERA_THROW(NotImplementedError, "this build has no gRPC transport (configure with -DTESSERA_WITH_GRPC=ON)");
#endif
  }
  bool chief = t->rank() == 0;
  auto [train, test] = load_data(o, data_dir, chief);
  check_global_batch(o, nodes, train);
  o.progress = o.progress && chief;
  RankResult res;
  try {
    res = run_rank(o, train, test, mesh, t, sync_opt, links_csv, /*exit_on_comm_error=*/true);
  } catch (const CommError& e) {  // one before training (building the communicator)
    exit_on(e);
  }
  if (chief) std::cout << res.report;
  return 0;
}

}  // namespace

int train_command(const std::vector<std::string>& argv) {
  TrainOptions o;
  o.model = "cnn";
  o.precision = Precision::bf16;
  o.opt.lr = 0.05;
  o.opt.momentum = 0.9;
  std::string data_dir = kFashionMnistDir;
  int64_t threads = 0;
  std::string mesh_spec, transport = "loopback", links_csv;
  int64_t loopback_ranks = 0;
  GradientSyncOptions sync_opt;
  try {
    Args a{argv};
    for (; a.i < argv.size(); ++a.i) {
      const std::string& f = argv[a.i];
      if (f == "--model") o.model = a.value(f);
      else if (f == "--precision") o.precision = precision_from_name(a.value(f));
      else if (f == "--epochs") o.epochs = to_int(f, a.value(f), 0);
      else if (f == "--batch-size") o.batch_size = to_int(f, a.value(f), 1);
      else if (f == "--lr") o.opt.lr = to_double(f, a.value(f), 0);
      else if (f == "--optimizer") o.optimizer = a.value(f);
      else if (f == "--momentum") o.opt.momentum = to_double(f, a.value(f), 0);
      else if (f == "--nesterov") o.opt.nesterov = true;
      else if (f == "--weight-decay") o.opt.weight_decay = to_double(f, a.value(f), 0);
      else if (f == "--schedule") o.schedule = a.value(f);
      else if (f == "--warmup") o.warmup_steps = to_int(f, a.value(f), 0);
      else if (f == "--clip") o.clip_norm = to_double(f, a.value(f), 0);
      else if (f == "--seed") o.seed = static_cast<uint64_t>(to_int(f, a.value(f), 0));
      else if (f == "--checkpoint") o.checkpoint_dir = a.value(f);
      else if (f == "--resume") o.resume = true;
      else if (f == "--metrics") o.metrics_path = a.value(f);
      else if (f == "--data") data_dir = a.value(f);
      else if (f == "--max-steps") o.max_steps = to_int(f, a.value(f), 0);
      else if (f == "--threads") threads = to_int(f, a.value(f), 1);
      else if (f == "--no-progress") o.progress = false;
      else if (f == "--no-loss-scaling") o.loss_scaling = false;
      else if (f == "--mesh") mesh_spec = a.value(f);
      else if (f == "--transport") transport = a.value(f);
      else if (f == "--ranks") loopback_ranks = to_int(f, a.value(f), 1);
      else if (f == "--bucket-mb") sync_opt.bucket_bytes = static_cast<size_t>(to_double(f, a.value(f), 0.001) * (1 << 20));
      else if (f == "--allreduce") sync_opt.algorithm = comms::algorithm_from_name(a.value(f));
      else if (f == "--links") links_csv = a.value(f);
      else if (f == "--cfp8-margin") o.cfp8.margin = static_cast<int>(to_int(f, a.value(f), 0));
      else if (f == "--cfp8-rounding") {
        std::string r = a.value(f);
        TESSERA_CHECK(r == "nearest" || r == "stochastic", "option --cfp8-rounding: '", r,
                      "' is not nearest or stochastic");
        o.cfp8.rounding = r == "nearest" ? Rounding::nearest_even : Rounding::stochastic;
      }
      else if (f == "--help" || f == "-h") {
        std::cout << kTrainUsage;
        return 0;
      } else {
        std::cerr << "tessera train: unknown option '" << f << "'\n\n" << kTrainUsage;
        return 2;
      }
    }
    models::make_model(o.model, 0);  // validates the name up front
    lr_schedule_from_name(o.schedule);
    if (o.optimizer == "adamw" && o.opt.momentum == 0.9) o.opt.momentum = 0;  // momentum is SGD's
    TESSERA_CHECK(transport == "loopback" || transport == "mpi" || transport == "grpc",
                  "option --transport: '", transport, "' is not loopback, mpi or grpc");
    if (!mesh_spec.empty()) comms::Mesh::parse(mesh_spec);  // validates up front
  } catch (const ValueError& e) {
    std::cerr << "tessera train: " << e.what() << "\n";
    return 2;
  }
  std::unique_ptr<tbb::global_control> limit;
  if (threads > 0) {
    limit = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, threads);
  }
  if (mesh_spec.empty() && transport == "loopback") return train_single(o, data_dir);
  if (mesh_spec.empty()) mesh_spec = "1x1";
  return train_mesh(o, data_dir, comms::Mesh::parse(mesh_spec), transport, static_cast<int>(loopback_ranks),
                    sync_opt, links_csv);
}

}  // namespace tessera
