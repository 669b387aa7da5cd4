// Failure behaviour over the mpi transport (run by ctest under mpirun -np 2):
//   hang: rank 1 stops answering during an all-reduce; rank 0 must get a TimeoutError naming
//         rank 1 and the operation within the deadline. Both then leave cleanly.
//   exit: rank 1 exits mid-collective. OpenMPI's default is to kill the whole job when a rank
//         exits with an error; with --mca orte_abort_on_non_zero_status 0 the job survives and
//         rank 0 must time out as above (it then leaves without MPI_Finalize: its peer is gone).
//   native-late: rank 1 never makes its first native all-reduce (it sleeps); rank 0's first
//         native call, which sets up MPI's row/column communicators, must still time out
//         within the deadline, naming the operation and the ranks of the group.
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
