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
// Prints "PASS: ..." or "FAIL: ..." from rank 0.
#include <tessera/comms/collectives.h>
#include <tessera/comms/mpi/transport.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <unistd.h>

using namespace tessera;
using namespace tessera::comms;

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
    auto t0 = std::chrono::steady_clock::now();
    std::string result;
    try {
      mpi::MpiTransport t;
      result = "FAIL: the transport was made without rank 1";
    } catch (const TimeoutError& e) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f s", s);
      result = (s < 2.5 && std::strstr(e.what(), "MPI_Comm_idup") ? "PASS: rank 0 got TimeoutError after "
                                                                   : "FAIL: TimeoutError after ") +
               std::string(buf) + ": " + e.what();
    }
    std::printf("%s (%s)\n", result.c_str(), mode.c_str());
    std::fflush(stdout);
    MPI_Barrier(MPI_COMM_WORLD);
    _exit(result.rfind("PASS", 0) == 0 ? 0 : 1);
  }
  auto t = std::make_shared<mpi::MpiTransport>();
  if (t->size() != 2) {
    std::fprintf(stderr, "run with mpirun -np 2\n");
    return 2;
  }
  MeshComm comm(Mesh::parse("1x2"), t);
  std::vector<float> v(16, 1.0f);
  AllreduceOptions o;
  o.count = v.size();
  o.inputs = {v.data()};
  o.outputs = {v.data()};
  o.timeout = std::chrono::milliseconds(1000);
  const bool native = mode == "native-late";
  o.algorithm = native ? Algorithm::ring : Algorithm::mesh2d;
  allreduce(comm.world(), o);  // both alive: works
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
