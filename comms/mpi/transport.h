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
//
// Shared communication memory (MPI_Alloc_mem's idea; NCCL's registered buffers):
//
//   auto mem = t->allocate_shared(64 << 20);       // collective: every rank, same order
//   float* grads = static_cast<float*>(mem->data());
//
// Ranks on one host (same host name, boot and /dev/shm; found at start-up) map each other's
// shared memory (POSIX shm objects, unlinked once mapped). A send of at least kDirectMinBytes
// from inside such memory to a rank on the same host carries only a descriptor over MPI. The
// receive, posted to MPI as always (so MPI's matching order holds), gets either the bytes or the
// descriptor; for a descriptor the receiver copies the bytes from the sender's mapping over it
// (one copy, no system call: OpenMPI's single-copy path goes through process_vm_readv), or with
// irecv_consume hands them to the caller where they lie, and then acknowledges on a second
// communicator, which completes the send. So a direct send completes only once the receiver
// tests or waits on its receive, and a size mismatch fails both sides (a receive shorter than
// a descriptor, 40 bytes, fails alone and its sender times out); a receive dropped after MPI
// matched a descriptor to it fails the sender at once (one dropped before stays unmatched, and
// its sender waits for the deadline, as for MPI's own large messages). Anything else (other memory, other hosts, small
// messages) is an ordinary MPI message. If allocate_shared times out, the transport is aborted
// (the ranks no longer agree on the regions). The memory lives until both its handle and the
// transport are gone.
// TESSERA_MPI_SHARED=0 (on every rank) turns shared memory off.
#pragma once

#include <tessera/comms/transport.h>

#include <mpi.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace tessera::comms::mpi {

class MpiTransport : public Transport {
 public:
  // Sends at least this long from shared memory to a rank on the same host are read directly.
  static constexpr size_t kDirectMinBytes = 16 << 10;

  MpiTransport();
  ~MpiTransport() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* name() const override { return "mpi"; }
  uint64_t max_tag() const override { return max_tag_; }
  RequestPtr isend(int peer, uint64_t tag, const void* data, size_t bytes) override;
  RequestPtr irecv(int peer, uint64_t tag, void* data, size_t bytes) override;
  // A descriptor's bytes are consumed straight from the sender's shared memory.
  RequestPtr irecv_consume(int peer, uint64_t tag, void* buf, size_t bytes, Consume consume) override;
  void abort(const std::string& reason) override;
  double alpha() const override { return 3e-6; }
  double beta() const override { return 6e9; }

  // Collective over the ranks of this host: each calls it once per allocation, in the same
  // order (sizes may differ), within the communication deadline (TimeoutError naming the ranks
  // that did not). With no other rank on the host it is plain memory. Not thread-safe against
  // itself (one allocating thread per rank).
  std::shared_ptr<SharedMemory> allocate_shared(size_t bytes) override;
  // Ranks that share memory with this one (same host), this one included.
  int host_ranks() const { return static_cast<int>(host_members_.size()); }
  // Sends so far that were carried by a direct read, and receives that made one.
  uint64_t direct_sends() const { return direct_sends_.load(); }
  uint64_t direct_recvs() const { return direct_recvs_.load(); }

  MPI_Comm comm() const { return comm_; }
  // Held around MPI calls when MPI is not fully thread-safe; null when it is.
  std::mutex* serial() const { return serial_.get(); }
  void check_not_aborted() const;
  std::string aborted_reason() const;
  // MPI error code -> readable string.
  static std::string error_string(int code);

  // ---- the direct path (transport.cc) ----
  struct Region;
  // The region of this rank's shared memory holding [data, data + bytes), or null.
  std::shared_ptr<Region> region_of(const void* data, size_t bytes) const;
  // Peer `peer`'s mapping of its region `id` (base, bytes), or {null, 0}.
  std::pair<const char*, size_t> peer_region(int peer, uint32_t id) const;
  bool shares_memory_with(int peer) const { return host_rank_[static_cast<size_t>(peer)] >= 0; }
  int host_rank(int peer) const { return host_rank_[static_cast<size_t>(peer)]; }
  MPI_Comm ctrl_comm() const { return ctrl_comm_; }
  uint64_t next_direct_seq(int peer);
  // Keeps `owner` alive until MPI completes `r` (a small send, or a cancelled receive).
  void adopt(std::shared_ptr<void> owner, MPI_Request r);
  // Sends a small message on the control communicator; `owner` keeps `data` alive until it is out.
  void send_small(int peer, int tag, std::shared_ptr<void> owner, const void* data, size_t bytes,
                  const std::string& what);
  void count_direct(bool send) { (send ? direct_sends_ : direct_recvs_).fetch_add(1); }

 private:
  void check_peer(int peer, uint64_t tag, size_t bytes) const;
  MPI_Comm comm_ = MPI_COMM_NULL;
  // A second communicator for shared-memory setup and acknowledgements; each rank's index
  // among the ranks of this host (-1: another host), and those ranks.
  MPI_Comm ctrl_comm_ = MPI_COMM_NULL;
  std::vector<int> host_rank_;
  std::vector<int> host_members_;
  mutable std::mutex regions_mu_;
  // By id: this rank's memory and its mappings of the host peers' memory of the same id.
  std::vector<std::shared_ptr<Region>> regions_;
  std::unique_ptr<std::atomic<uint64_t>[]> direct_seq_;  // per peer
  std::atomic<uint64_t> direct_sends_{0}, direct_recvs_{0};
  std::mutex small_mu_;
  std::vector<std::pair<std::shared_ptr<void>, MPI_Request>> small_sends_;  // adopted; guarded by small_mu_
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
