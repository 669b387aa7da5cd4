// Failure behaviour over the mpi transport (run by ctest under mpirun -np 2):
//   hang: rank 1 stops answering during an all-reduce; rank 0 must get a TimeoutError naming
//         rank 1 and the operation within the deadline. Both then leave cleanly.
//   exit: rank 1 exits mid-collective. OpenMPI's default is to kill the whole job when a rank
//         exits with an error; with --mca orte_abort_on_non_zero_status 0 the job survives and
//         rank 0 must time out as above (it then leaves without MPI_Finalize: its peer is gone).
//   native-late: rank 1 never makes its first native all-reduce (it sleeps); rank 0's first
//         native call, which sets up MPI's row/column communicators, must still time out
//         within the deadline, naming the operation and the ranks of the group.
//   late-start: rank 1 makes its transport only after 3.5 s; rank 0's, with a deadline of
//         1 s (TESSERA_COMM_TIMEOUT_MS), must fail with a TimeoutError by then.
//   shared-hang: as hang, on buffers in the transport's shared memory (sends are read directly
//         by the peer, and complete only when it acknowledges).
//   shared-late: rank 1 does not take part in allocate_shared (it sleeps 3.5 s); rank 0's, with
//         a deadline of 1 s, must fail with a TimeoutError naming rank 1.
//   shared-one-off: only rank 1 sets TESSERA_MPI_SHARED=0; both ranks must agree that they do
//         not share memory (allocate_shared returns at once, sends are ordinary and arrive).
// Prints "PASS: ..." or "FAIL: ..." from rank 0.
#include <tessera/comms/collectives.h>
#include <tessera/comms/mpi/transport.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <algorithm>
#include <thread>
#include <unistd.h>

using namespace tessera;
using namespace tessera::comms;

// Rank 0's check of a call that must time out within 2.5 s with `expect` in its message; prints
// the verdict, waits for rank 1 and exits with it.
[[noreturn]] void expect_timeout(const std::string& mode, const std::string& what, const char* expect,
                                 const std::function<void()>& call) {
  auto t0 = std::chrono::steady_clock::now();
  std::string result;
  try {
    call();
    result = "FAIL: " + what + " completed without rank 1";
  } catch (const TimeoutError& e) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f s", s);
    result = (s < 2.5 && std::strstr(e.what(), expect) ? "PASS: rank 0 got TimeoutError after "
                                                       : "FAIL: TimeoutError after ") +
             std::string(buf) + ": " + e.what();
  }
  std::printf("%s (%s)\n", result.c_str(), mode.c_str());
  std::fflush(stdout);
  MPI_Barrier(MPI_COMM_WORLD);
  _exit(result.rfind("PASS", 0) == 0 ? 0 : 1);
}

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "hang";
  if (mode == "late-start") {
    mpi::ensure_mpi_initialized();
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ::setenv("TESSERA_COMM_TIMEOUT_MS", "1000", 1);
    if (rank == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3500));
      mpi::MpiTransport late;  // completes the duplicate rank 0 gave up on
      MPI_Barrier(MPI_COMM_WORLD);
      return 0;
    }
    expect_timeout(mode, "the transport", "MPI_Comm_idup", [] { mpi::MpiTransport t; });
  }
  if (mode == "shared-late") ::setenv("TESSERA_COMM_TIMEOUT_MS", "1000", 1);
  if (mode == "shared-one-off") {
    mpi::ensure_mpi_initialized();
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ::setenv("TESSERA_COMM_TIMEOUT_MS", "3000", 1);
    if (rank == 1) ::setenv("TESSERA_MPI_SHARED", "0", 1);
    mpi::MpiTransport t;
    auto t0 = std::chrono::steady_clock::now();
    std::string result;
    try {
      auto mem = t.allocate_shared(64 << 10);
      std::memset(mem->data(), 7, 64 << 10);
      std::vector<char> got(64 << 10);
      auto r = rank == 0 ? t.isend(1, 3, mem->data(), got.size()) : t.irecv(0, 3, got.data(), got.size());
      bool ok = r->wait(deadline_after(std::chrono::seconds(3)));
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      result = ok && t.host_ranks() == 1 && t.direct_sends() == 0 && s < 1.0 &&
                       (rank == 0 || got == std::vector<char>(64 << 10, 7))
                   ? "PASS: both ranks use ordinary messages"
                   : "FAIL: host_ranks " + std::to_string(t.host_ranks()) + ", " + std::to_string(s) + " s";
    } catch (const std::exception& e) {
      result = std::string("FAIL: ") + e.what();
    }
    std::printf("rank %d: %s (%s)\n", rank, result.c_str(), mode.c_str());
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    return result.rfind("PASS", 0) == 0 ? 0 : 1;
  }
  auto t = std::make_shared<mpi::MpiTransport>();
  if (t->size() != 2) {
    std::fprintf(stderr, "run with mpirun -np 2\n");
    return 2;
  }
  if (mode == "shared-late") {
    if (t->rank() == 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(3500));
      MPI_Barrier(MPI_COMM_WORLD);
      return 0;
    }
    expect_timeout(mode, "allocate_shared", "rank(s) 1 ", [&] { t->allocate_shared(1 << 20); });
  }
  MeshComm comm(Mesh::parse("1x2"), t);
  // shared-hang: 256 KiB in shared memory, so the ring's messages go direct.
  const bool shared = mode == "shared-hang";
  const size_t count = shared ? size_t{1} << 16 : 16;
  std::vector<float> heap(shared ? 0 : count, 1.0f);
  std::shared_ptr<SharedMemory> mem = shared ? t->allocate_shared(count * sizeof(float)) : nullptr;
  float* v = shared ? static_cast<float*>(mem->data()) : heap.data();
  std::fill(v, v + count, 1.0f);
  AllreduceOptions o;
  o.count = count;
  o.inputs = {v};
  o.outputs = {v};
  o.timeout = std::chrono::milliseconds(1000);
  const bool native = mode == "native-late";
  o.algorithm = native ? Algorithm::ring : Algorithm::mesh2d;
  const uint64_t direct0 = t->direct_sends();
  allreduce(comm.world(), o);  // both alive: works
  if (shared && t->direct_sends() == direct0) {
    std::printf("FAIL: no send went direct (%s)\n", mode.c_str());
    return 1;
  }
  if (native) o.algorithm = Algorithm::native;
  if (comm.rank() == 1) {
    if (mode == "exit") {
      std::fflush(stdout);
      _exit(7);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(3500));
    MPI_Barrier(MPI_COMM_WORLD);
    return 0;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::string result;
  try {
    allreduce(comm.world(), o);
    result = "FAIL: the all-reduce completed without rank 1";
  } catch (const TimeoutError& e) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bool names = std::strstr(e.what(), native ? "ranks 0 and 1" : "rank 1") && std::strstr(e.what(), "allreduce");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f s", s);
    result = (names && s < 2.5 ? "PASS: rank 0 got TimeoutError after " : "FAIL: TimeoutError after ") +
             std::string(buf) + ": " + e.what();
  } catch (const std::exception& e) {
    result = std::string("FAIL: wrong error: ") + e.what();
  }
  std::printf("%s (%s)\n", result.c_str(), mode.c_str());
  std::fflush(stdout);
  if (mode == "exit") _exit(result.rfind("PASS", 0) == 0 ? 0 : 1);
  MPI_Barrier(MPI_COMM_WORLD);
  return result.rfind("PASS", 0) == 0 ? 0 : 1;
}
