// All-reduce bandwidth of tessera's algorithms over the mpi (and grpc) transport, against
// MPI_Allreduce on the same ranks in the same run (the peer). nccl-tests definitions
// (PERFORMANCE.md): time = average per call; algbw = bytes / time; busbw = algbw x 2(n-1)/n
// with n = nodes; wrong = elements off the exact expected value (integer-valued inputs).
//
//   mpirun -np 2 build/benchmarks/collective_bench                 # mesh 1x2, f32
//   mpirun -np 4 --oversubscribe build/benchmarks/collective_bench --mesh 2x2 --dtype bf16
//   options: --mesh RxC  --dtype f32|bf16  --min-bytes N  --max-bytes N  --chunk-bytes N
//            --seconds S (time budget per point)  --no-grpc
//            --repeat R (R rounds per size, the peer and every row in turn each round: the time
//            printed is the median over the rounds, "vs peer" the median of the R per-round
//            ratios, and "range" their min-max; for a shared, noisy machine)
//            --in-place (every row reduces the output buffers in place: tessera with inputs ==
//            outputs, the peer with MPI_IN_PLACE; repeated calls keep summing, which costs the
//            same; the wrong-element check runs on fresh values)
//            --plain-memory (private buffers, as from the heap; by default they come from the mpi transport's
//            allocate_shared, from which co-located ranks read each other's sends directly; the
//            peer uses the same buffers either way)
//            --rows LIST (comma-separated subset of ring,mesh2d,native,grpc,grpc-unix,grpc-tcp;
//            the peer always runs). grpc: the default route between co-located ranks (large
//            chunks read from the sender's memory, the rest over a Unix socket; TESSERA_GRPC_LOCAL
//            =cma); grpc-unix: every byte over the Unix socket (=unix); grpc-tcp: over TCP
//            loopback (=tcp).
#include <tessera/comms/collectives.h>
#include <tessera/comms/mpi/transport.h>
#if defined(TESSERA_WITH_GRPC)
#define TESSERA_BENCH_GRPC 1
#include <tessera/comms/grpc/transport.h>
#endif
#include <tessera/core/bf16.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

using namespace tessera;
using namespace tessera::comms;

namespace {

struct Args {
  std::string mesh;
  DType dtype = DType::f32;
  size_t min_bytes = 4 << 10, max_bytes = 64 << 20;
  size_t chunk_bytes = 0;
  double seconds = 0.25;
  int repeat = 1;
  bool grpc = true;
  bool in_place = false;
  bool plain_memory = false;
  std::string rows = "ring,mesh2d,native,grpc,grpc-unix,grpc-tcp";
  bool want(const std::string& row) const { return ("," + rows + ",").find("," + row + ",") != std::string::npos; }
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--mesh") a.mesh = next();
    else if (k == "--dtype") a.dtype = dtype_from_name(next());
    else if (k == "--min-bytes") a.min_bytes = std::stoull(next());
    else if (k == "--max-bytes") a.max_bytes = std::stoull(next());
    else if (k == "--chunk-bytes") a.chunk_bytes = std::stoull(next());
    else if (k == "--seconds") a.seconds = std::stod(next());
    else if (k == "--repeat") a.repeat = std::stoi(next());
    else if (k == "--no-grpc") a.grpc = false;
    else if (k == "--in-place") a.in_place = true;
    else if (k == "--plain-memory") a.plain_memory = true;
    else if (k == "--rows") a.rows = next();
    else {
      std::fprintf(stderr, "unknown option %s (see the header of collective_bench.cc)\n", k.c_str());
      std::exit(2);
    }
  }
  if (a.repeat < 1 || a.repeat > 100) {
    std::fprintf(stderr, "--repeat must be 1..100\n");
    std::exit(2);
  }
  return a;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Times fn: warm-up, then enough iterations to fill the budget (agreed over ranks).
double time_calls(const std::function<void()>& fn, double budget) {
  fn();
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = now();
  fn();
  double one = now() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &one, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  int iters = static_cast<int>(std::clamp(budget / std::max(one, 1e-7), 3.0, 1000.0));
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = now();
  for (int i = 0; i < iters; ++i) fn();
  double t = (now() - t0) / iters;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

float value(int node, size_t i) { return static_cast<float>((node * 3 + i) % 7); }

struct Row {
  std::string name;
  std::vector<double> t;  // seconds per call, one per round
  long wrong = 0;         // summed over the rounds
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t k = v.size() / 2;
  return v.size() % 2 ? v[k] : (v[k - 1] + v[k]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  Args args = parse(argc, argv);
  auto mpi_t = std::make_shared<mpi::MpiTransport>();
  const int rank = mpi_t->rank(), size = mpi_t->size();
  Mesh mesh = Mesh::parse(args.mesh.empty() ? "1x" + std::to_string(size) : args.mesh);
  auto mesh_comm = std::make_unique<MeshComm>(mesh, mpi_t);
  const auto& nodes = mesh_comm->local_nodes();
  const size_t L = nodes.size(), es = dtype_size(args.dtype);
  const int n = mesh.size();

#if defined(TESSERA_BENCH_GRPC)
  // A gRPC transport exists only while its row runs: an idle second one (its polling threads)
  // measurably slows the first.
  // route: "cma" (the default: co-located ranks read large chunks from each other's memory),
  // "unix" (every byte over the Unix socket) or "tcp".
  auto open_grpc = [&](const std::string& route) {
    // Rendezvous on rank 0: it picks a free port and tells the others through MPI.
    int port = rank == 0 ? grpc::pick_free_port() : 0;
    MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
    grpc::GrpcOptions go;
    go.rank = rank;
    go.world_size = size;
    go.coordinator = "127.0.0.1:" + std::to_string(port);
    go.unix_local = route != "tcp";
    go.cma_local = route == "cma";
    return std::make_unique<MeshComm>(mesh, std::make_shared<grpc::GrpcTransport>(go));
  };
#endif

  if (rank == 0) {
    std::printf("collective_bench: all-reduce, mesh %s over %d ranks (%d node(s) per rank), %s, "
                "chunk %zu bytes\n",
                mesh.shape_string().c_str(), size, static_cast<int>(L), dtype_name(args.dtype),
                mesh_comm->chunk_bytes_or_default(args.chunk_bytes));
    std::printf("buffers: %s\n", args.plain_memory ? "private (--plain-memory)"
                                                     : "the mpi transport's shared memory (allocate_shared)");
    std::printf("%s; peer: MPI_Allreduce (MPI_FLOAT, MPI_SUM, %s; a rank's nodes summed in memory first "
                "when it hosts several), same ranks, same run. busbw = algbw x 2(n-1)/n, n = %d\n\n",
                args.in_place ? "in place" : "out of place",
                args.in_place ? "MPI_IN_PLACE" : L == 1 ? "input -> output" : "in place on output 0", n);
    if (args.repeat > 1) std::printf("%d rounds per size: medians, and the range of the per-round ratios\n\n", args.repeat);
    std::printf("%12s  %-16s %10s %10s %10s %7s %9s%s\n", "bytes", "algorithm", "time(us)",
                "algbw GB/s", "busbw GB/s", "wrong", "vs peer", args.repeat > 1 ? "   range" : "");
  }

  // Every node's input and output, at their largest: from the transport's shared memory (one
  // allocation, every rank) or private memory; each size uses the front of each.
  struct Buf {
    char* p;
    size_t n;
    char* data() const { return p; }
    size_t size() const { return n; }
  };
  const size_t span = (args.max_bytes + 4095) / 4096 * 4096;
  std::shared_ptr<SharedMemory> buffers = args.plain_memory ? allocate_private(2 * L * span)
                                                            : mpi_t->allocate_shared(2 * L * span);
  char* base = static_cast<char*>(buffers->data());

  std::vector<std::string> notes;  // printed under the table
  for (size_t bytes = args.min_bytes; bytes <= args.max_bytes; bytes *= 4) {
    size_t count = bytes / es;
    std::vector<Buf> in, out;
    for (size_t l = 0; l < L; ++l) {
      in.push_back({base + l * span, count * es});
      out.push_back({base + (L + l) * span, count * es});
    }
    for (size_t l = 0; l < L; ++l) {
      for (size_t i = 0; i < count; ++i) {
        float v = value(nodes[l], i);
        if (args.dtype == DType::f32) reinterpret_cast<float*>(in[l].data())[i] = v;
        else reinterpret_cast<uint16_t*>(in[l].data())[i] = f32_to_bf16(v);
      }
    }
    auto wrong_elems = [&]() -> long {
      long wrong = 0;
      for (size_t l = 0; l < L; ++l) {
        for (size_t i = 0; i < count; ++i) {
          float want = 0;
          for (int m = 0; m < n; ++m) want += value(m, i);
          float got = args.dtype == DType::f32 ? reinterpret_cast<float*>(out[l].data())[i]
                                               : bf16_to_f32(reinterpret_cast<uint16_t*>(out[l].data())[i]);
          wrong += got != want;
        }
        std::memset(out[l].data(), 0, out[l].size());
      }
      MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
      return wrong;
    };
    std::vector<Row> rows;  // in order of first appearance
    auto record = [&](const std::string& name, double t, long wrong) {
      auto it = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.name == name; });
      if (it == rows.end()) it = rows.insert(rows.end(), Row{name, {}, 0});
      it->t.push_back(t);
      it->wrong += wrong;
    };

    // In place: every row reduces `out` in place; the check needs the inputs there first.
    auto refill = [&] {
      if (args.in_place)
        for (size_t l = 0; l < L; ++l) std::memcpy(out[l].data(), in[l].data(), count * es);
    };
    const auto& src = args.in_place ? out : in;

    // The peer: MPI_Allreduce over the ranks (f32 only; bf16 has no MPI type), with no more
    // copying than the call needs: one node per rank, straight from input to output (or in
    // place); several, their sum formed in output 0, reduced in place, copied to the others.
    for (int round = 0; round < args.repeat; ++round) {
      if (args.dtype == DType::f32) {
        float* o0 = reinterpret_cast<float*>(out[0].data());
        auto run = [&] {
          const int cnt = static_cast<int>(count);
          if (L == 1) {
            MPI_Allreduce(args.in_place ? MPI_IN_PLACE : in[0].data(), o0, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            return;
          }
          const float* s0 = reinterpret_cast<const float*>(src[0].data());
          const float* s1 = reinterpret_cast<const float*>(src[1].data());
          for (size_t i = 0; i < count; ++i) o0[i] = s0[i] + s1[i];
          for (size_t l = 2; l < L; ++l)
            for (size_t i = 0; i < count; ++i) o0[i] += reinterpret_cast<const float*>(src[l].data())[i];
          MPI_Allreduce(MPI_IN_PLACE, o0, cnt, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
          for (size_t l = 1; l < L; ++l) std::memcpy(out[l].data(), o0, count * es);
        };
        refill();
        double peer = time_calls(run, args.seconds);
        refill();
        run();
        record("MPI_Allreduce", peer, wrong_elems());
      }
      auto tessera_row = [&](MeshComm& comm, Algorithm a, const std::string& name) {
        AllreduceOptions o;
        o.count = count;
        o.dtype = args.dtype;
        o.algorithm = a;
        o.chunk_bytes = args.chunk_bytes;
        o.timeout = std::chrono::seconds(120);
        for (size_t l = 0; l < L; ++l) {
          o.inputs.push_back(args.in_place ? out[l].data() : in[l].data());
          o.outputs.push_back(out[l].data());
        }
        auto run = [&] { allreduce(comm.world(), o); };
        refill();
        double t = time_calls(run, args.seconds);
        refill();
        run();
        record(name, t, wrong_elems());
      };
      for (Algorithm a : {Algorithm::ring, Algorithm::mesh2d, Algorithm::native}) {
        if (args.want(algorithm_name(a)))
          tessera_row(*mesh_comm, a, std::string("mpi/") + algorithm_name(a));
      }
#if defined(TESSERA_BENCH_GRPC)
      for (const std::string route : {"cma", "unix", "tcp"}) {
        const std::string row = route == "cma" ? "grpc" : "grpc-" + route;
        if (!args.grpc || !args.want(row)) continue;
        auto comm = open_grpc(route);
        if (rank == 0 && round == 0 && bytes == args.min_bytes && comm->chunk_bytes_or_default(args.chunk_bytes) != mesh_comm->chunk_bytes_or_default(args.chunk_bytes))
          notes.push_back(row + ": chunk " + std::to_string(comm->chunk_bytes_or_default(args.chunk_bytes)) + " bytes (the transport's segment)");
        tessera_row(*comm, Algorithm::mesh2d, row + "/mesh2d");
      }
#endif
    }  // rounds
    if (rank == 0) {
      const Row* peer = rows.empty() || rows[0].name != "MPI_Allreduce" ? nullptr : &rows[0];
      for (const Row& r : rows) {
        const double t = median(r.t);
        double algbw = static_cast<double>(bytes) / t / 1e9;
        double busbw = algbw * 2.0 * (n - 1) / n;
        char ratio[32] = "-", range[48] = "";
        if (peer) {
          std::vector<double> q;
          for (size_t k = 0; k < r.t.size(); ++k) q.push_back(peer->t[k] / r.t[k]);
          std::snprintf(ratio, sizeof ratio, "%.2fx", median(q));
          if (args.repeat > 1)
            std::snprintf(range, sizeof range, "   %.2f-%.2f", *std::min_element(q.begin(), q.end()), *std::max_element(q.begin(), q.end()));
        }
        std::printf("%12zu  %-16s %10.1f %10.2f %10.2f %7ld %9s%s\n", bytes, r.name.c_str(), t * 1e6,
                    algbw, busbw, r.wrong, ratio, range);
      }
      std::fflush(stdout);
    }
  }
  if (rank == 0) {
    for (const auto& note : notes) std::printf("note: %s\n", note.c_str());
    std::printf("\nemulated mesh links (rank 0's view, all sizes and algorithms):\n%s",
                mesh_comm->link_stats().top_links(4).c_str());
  }
  if (rank == 0 && !args.plain_memory)
    std::printf("rank 0: %llu sends read directly by co-located ranks (mpi transport)\n",
                static_cast<unsigned long long>(mpi_t->direct_sends()));
  mesh_comm.reset();
  return 0;
}
