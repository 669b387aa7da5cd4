#include <tessera/runtime/data_parallel.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>

#include <chrono>
#include <cstring>

namespace tessera {

GradientSync::GradientSync(comms::MeshComm& comm, GradientSyncOptions o) : comm_(comm), opt_(o) {
  TESSERA_CHECK(o.bucket_bytes >= 4, "gradient bucket of ", o.bucket_bytes, " bytes is too small");
  worker_ = std::thread([this] { run_worker(); });
}

GradientSync::~GradientSync() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();  // a collective in progress ends by its deadline at the latest
}

void GradientSync::run_worker() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (step_open_ && next_ < buckets_.size() && buckets_[next_].full); });
    if (stop_) return;
    const size_t b = next_;
    busy_ = true;
    const bool failed = error_ != nullptr;
    lock.unlock();
    std::exception_ptr e;
    if (!failed) {  // after a failure the communicator is unusable: the rest are skipped
      try {
        reduce_bucket(b);
      } catch (...) {
        e = std::current_exception();
      }
    }
    lock.lock();
    if (e && !error_) error_ = e;
    busy_ = false;
    ++next_;
    cv_.notify_all();
  }
}

void GradientSync::reduce_bucket(size_t bi) {
  Bucket& b = buckets_[bi];
  // Tags: one per bucket, so that a late message of a previous step or bucket cannot match.
  uint64_t tag = (step_ * buckets_.size() + bi) % comm_.max_user_tag();
  comms::AllreduceOptions o;
  for (float* buf : b.buffers) {
    o.inputs.push_back(buf);
    o.outputs.push_back(buf);
  }
  o.count = b.elems;
  o.dtype = DType::f32;
  o.tag = tag;
  o.algorithm = opt_.algorithm;
  auto t0 = std::chrono::steady_clock::now();
  comms::allreduce(comm_.world(), o);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::lock_guard<std::mutex> lock(mu_);
  comm_seconds_ += s;
}

int GradientSync::world_nodes() const { return comm_.mesh().rows() * comm_.mesh().cols(); }
int GradientSync::local_nodes() const { return static_cast<int>(comm_.local_nodes().size()); }

void GradientSync::begin(const std::vector<int64_t>& sizes) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !busy_; });  // a step abandoned mid-way may still be reducing
  step_open_ = false;
  if (sizes != sizes_) {  // plan buckets once: gradients in reverse order (the backward's order)
    sizes_ = sizes;
    buckets_.clear();
    bucket_of_.assign(sizes.size(), -1);
    offset_in_bucket_.assign(sizes.size(), 0);
    for (int i = static_cast<int>(sizes.size()) - 1; i >= 0; --i) {
      if (buckets_.empty() || buckets_.back().elems * 4 >= opt_.bucket_bytes) buckets_.emplace_back();
      Bucket& b = buckets_.back();
      bucket_of_[i] = static_cast<int>(buckets_.size()) - 1;
      offset_in_bucket_[i] = static_cast<int64_t>(b.elems);
      b.grads.push_back(i);
      b.elems += static_cast<size_t>(sizes[i]);
    }
    // One allocation for every bucket and hosted node (collective over the ranks of a host
    // under mpi: every rank plans the same buckets in the same order).
    const size_t nodes = static_cast<size_t>(local_nodes());
    size_t total = 0;
    for (const auto& b : buckets_) total += b.elems * nodes;
    try {
      storage_ = comm_.transport().allocate_shared(total * sizeof(float));
    } catch (const OutOfMemoryError& e) {  // under mpi every rank of the host gets it alike
      log::get("runtime")->warn("gradient buckets in private memory: {}", e.what());
      storage_ = comms::allocate_private(total * sizeof(float));
    }
    float* base = static_cast<float*>(storage_->data());
    for (auto& b : buckets_) {
      b.buffers.clear();
      for (size_t l = 0; l < nodes; ++l, base += b.elems) b.buffers.push_back(base);
    }
  }
  for (auto& b : buckets_) {
    b.pending = static_cast<int>(b.grads.size()) * local_nodes();
    b.full = false;
  }
  ++step_;
  next_ = 0;
  error_ = nullptr;
  step_open_ = true;
}

void GradientSync::ready(int replica, int index, const Tensor& grad) {
  TESSERA_INTERNAL_ASSERT(replica >= 0 && replica < local_nodes() && index >= 0 &&
                              index < static_cast<int>(sizes_.size()),
                          "gradient ", index, " of replica ", replica);
  int bi = bucket_of_[index];
  Bucket& b = buckets_[bi];
  std::memcpy(b.buffers[replica] + offset_in_bucket_[index], grad.data<float>(),
              static_cast<size_t>(sizes_[index]) * sizeof(float));
  std::lock_guard<std::mutex> lock(mu_);
  if (--b.pending == 0) {
    b.full = true;
    cv_.notify_all();
  }
}

double GradientSync::finish(const std::vector<Tensor>& out, double local_loss_sum) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (size_t bi = 0; bi < buckets_.size(); ++bi) {
      TESSERA_INTERNAL_ASSERT(buckets_[bi].pending == 0, "bucket ", bi, " still misses ", buckets_[bi].pending,
                              " gradients");
    }
    cv_.wait(lock, [&] { return next_ == buckets_.size(); });
    step_open_ = false;
    if (error_) std::rethrow_exception(error_);  // a CommError of a bucket's collective
  }
  const float inv = 1.0f / static_cast<float>(world_nodes());
  for (size_t i = 0; i < sizes_.size(); ++i) {
    const Bucket& b = buckets_[bucket_of_[i]];
    const float* src = b.buffers[0] + offset_in_bucket_[i];
    float* dst = out[i].data<float>();
    for (int64_t k = 0; k < sizes_[i]; ++k) dst[k] = src[k] * inv;
  }
  // The loss: one more (tiny) all-reduce, so every rank reports the global mean.
  std::vector<std::vector<float>> loss(static_cast<size_t>(local_nodes()), std::vector<float>(1, 0.f));
  loss[0][0] = static_cast<float>(local_loss_sum);
  comms::AllreduceOptions o;
  for (auto& l : loss) {
    o.inputs.push_back(l.data());
    o.outputs.push_back(l.data());
  }
  o.count = 1;
  o.tag = (step_ * buckets_.size() + buckets_.size()) % comm_.max_user_tag();
  // Distinct from every bucket tag of this step (they use 0..buckets-1 past the step base).
  o.tag = (o.tag + comm_.max_user_tag() / 2) % comm_.max_user_tag();
  comms::allreduce(comm_.world(), o);
  return loss[0][0] / world_nodes();
}

}  // namespace tessera
