// Data-parallel training over an emulated mesh: every mesh node holds a replica of the model
// and trains on its slice of the global batch; gradients are all-reduced over the whole mesh
// (comms/collectives.h) in buckets that start while the backward pass is still running.
//
//   comms::MeshComm comm(comms::Mesh::parse("2x2"), transport);
//   GradientSync sync(comm, {.bucket_bytes = 4 << 20});
//   TrainOptions o;  o.batch_size = 64 / 4;  o.replicas = comm.local_nodes().size();
//   o.grad_sync = &sync;  o.chief = comm.rank() == 0;
//   Trainer t(model, {28, 28, 1}, 10, o);   // each rank: same seed -> same initial weights
//
// A rank hosting several nodes runs their forward/backward one after another (they exchange
// through memory); the all-reduce of a bucket starts as soon as the last hosted node has
// produced every gradient in it. Sums are divided by the number of mesh nodes, so the update
// equals a single node's on the global batch (up to summation order). The buckets come from
// Transport::allocate_shared: over mpi, ranks on one host read each other's gradients directly.
#pragma once

#include <tessera/comms/collectives.h>
#include <tessera/comms/communicator.h>
#include <tessera/core/tensor.h>

#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <memory>
#include <string>
#include <vector>

namespace tessera {

struct GradientSyncOptions {
  size_t bucket_bytes = size_t{4} << 20;
  comms::Algorithm algorithm = comms::Algorithm::auto_;
};

class GradientSync {
 public:
  GradientSync(comms::MeshComm& comm, GradientSyncOptions o = {});
  ~GradientSync();

  comms::MeshComm& comm() { return comm_; }
  int world_nodes() const;
  int local_nodes() const;

  // One step: `sizes` are the gradients' element counts, in the order the trainer indexes them.
  void begin(const std::vector<int64_t>& sizes);
  // Gradient `index` of hosted node `replica` is final; it is copied into its bucket at once.
  void ready(int replica, int index, const Tensor& grad);
  // Waits for every bucket, writes the mean over all mesh nodes into `out` (replica 0's
  // tensors are fine), and returns the mean of `local_loss_sum` over all nodes.
  double finish(const std::vector<Tensor>& out, double local_loss_sum);

  double comm_seconds() const { return comm_seconds_; }  // wall time inside collectives, all steps

 private:
  struct Bucket {
    std::vector<int> grads;  // indices
    size_t elems = 0;
    int pending = 0;         // gradients (x replicas) not yet ready
    bool full = false;       // every gradient is in; the worker may reduce it
    std::vector<float*> buffers;  // one per hosted node, in storage_
  };
  void run_worker();
  void reduce_bucket(size_t b);

  comms::MeshComm& comm_;
  GradientSyncOptions opt_;
  std::vector<int64_t> sizes_;
  std::vector<int> bucket_of_;
  std::vector<int64_t> offset_in_bucket_;
  std::vector<Bucket> buckets_;
  std::shared_ptr<comms::SharedMemory> storage_;  // every bucket's buffers
  uint64_t step_ = 0;
  double comm_seconds_ = 0;
  // One worker thread all-reduces the buckets of a step in bucket order, each as soon as it is
  // full: every rank then starts the same collectives in the same order, which MPI's native
  // collectives require (ring and mesh2d would also allow buckets in flight at once).
  std::mutex mu_;
  std::condition_variable cv_;
  size_t next_ = 0;        // the bucket the worker reduces next
  bool step_open_ = false; // between begin() and finish()
  bool busy_ = false;      // the worker is inside a collective
  bool stop_ = false;
  std::exception_ptr error_;  // the step's first failure
  std::thread worker_;
};

}  // namespace tessera
