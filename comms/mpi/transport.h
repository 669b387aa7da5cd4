// mpi: OpenMPI point-to-point (MPI_Isend / MPI_Irecv, completion by MPI_Test polling against
// the deadline). Launched by mpirun:
//
//   mpirun -np 4 ./prog          // in prog:
//   auto t = std::make_shared<mpi::MpiTransport>();   // rank / size from MPI_COMM_WORLD
//
// MPI is initialized on first use with MPI_THREAD_MULTIPLE (if the library offers less, every
// MPI call is serialized by a mutex) and finalized at process exit, unless a transport was
// aborted (after a communication error MPI_Finalize may wait forever on a dead peer; mpirun
// then reports the abnormal exit instead). The transport works on its
// own duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, so errors become exceptions.
//
// Failure: a peer that hangs makes waits time out (TimeoutError from the caller). A peer that
// exits is normally noticed by mpirun, which then kills the whole job (OpenMPI's default);
// under `mpirun --mca orte_abort_on_non_zero_status 0` the survivors time out instead.
// abort() fails this rank's later operations; it cannot tell peers (no MPI call can without
// killing the job), so they time out. A pending receive is cancelled when its request is
// destroyed; one that has already matched a message from a hung sender cannot be, and is left
// to MPI after 1 s (its buffer may still be written later). A pending send is detached (MPI
// completes it in the background, reading its buffer). Likewise a native collective that
// timed out stays in MPI's hands. So after a communication error a process should stop using
// MPI and exit (as `tessera train` does), not go on with the buffers of failed calls.
#pragma once

#include <tessera/comms/transport.h>

#include <mpi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

namespace tessera::comms::mpi {

class MpiTransport : public Transport {
 public:
  MpiTransport();
  ~MpiTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }
  uint64_t max_tag() const override { return max_tag_; }
  RequestPtr isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestPtr irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  void abort(const std::string& reason) override;
  double alpha() const override { return 3e-6; }
  double beta() const override { return 6e9; }

  MPI_Comm comm() const { return comm_; }
  // Held around MPI calls when MPI is not fully thread-safe; null when it is.
  std::mutex* serial() const { return serial_.get(); }
  void check_not_aborted() const;
  std::string aborted_reason() const;
  // MPI error code -> readable string.
  static std::string error_string(int code);

 private:
  void check_peer(int peer, uint64_t tag, size_t bytes) const;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  uint64_t max_tag_ = 32767;
  std::unique_ptr<std::mutex> serial_;
  std::atomic<bool> aborted_{false};
  mutable std::mutex mu_;
  std::string abort_reason_;
};

// Initializes MPI once per process (idempotent) and returns the thread level provided.
int ensure_mpi_initialized();

// Polls `req` with MPI_Test (under `serial` unless it is null) until it completes or `deadline`
// passes; true if it completed. Spins briefly, then yields, then sleeps 50 us between tests (so
// as not to starve ranks sharing the cores). An MPI_Test error throws NetworkError naming `what`.
bool test_until(MPI_Request& req, Deadline deadline, std::mutex* serial, const std::string& what);

}  // namespace tessera::comms::mpi
