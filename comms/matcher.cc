#include <tessera/comms/matcher.h>
#include <tessera/core/error.h>

#include <cstring>
#include <vector>

namespace tessera::comms {

void throw_failure(const Failure& f) {
  switch (f.kind) {
    case FailKind::network: throw NetworkError(f.message);
    case FailKind::remote: throw RemoteError(f.message);
    case FailKind::comm: throw CommError(f.message);
  }
  throw CommError(f.message);
}

struct Matcher::Op {
  enum Status { queued, in_flight, done, failed };
  std::mutex mu;
  std::condition_variable cv;
  Status status = queued;
  Failure failure;
  const void* src = nullptr;  // sends
  void* dst = nullptr;        // receives
  size_t bytes = 0;

  void finish(Status s, Failure f = {}) {
    {
      std::lock_guard<std::mutex> lock(mu);
      status = s;
      failure = std::move(f);
    }
    cv.notify_all();
  }
};

class MatchRequest : public Request {
 public:
  MatchRequest(std::shared_ptr<Matcher> m, Matcher::Key key, std::shared_ptr<Matcher::Op> op)
      : matcher_(std::move(m)), key_(key), op_(std::move(op)) {}

  ~MatchRequest() override {
    if (matcher_) matcher_->withdraw(key_, op_);
    std::unique_lock<std::mutex> lock(op_->mu);  // a copy in flight reads or writes our buffer
    op_->cv.wait(lock, [&] { return op_->status != Matcher::Op::in_flight; });
  }

  bool wait(Deadline deadline) override {
    std::unique_lock<std::mutex> lock(op_->mu);
    if (!op_->cv.wait_until(lock, deadline, [&] { return op_->status >= Matcher::Op::done; })) {
      return false;
    }
    return check_locked();
  }

  bool test() override {
    std::lock_guard<std::mutex> lock(op_->mu);
    return op_->status >= Matcher::Op::done && check_locked();
  }

 private:
  bool check_locked() {
    if (op_->status == Matcher::Op::failed) throw_failure(op_->failure);
    return true;
  }

  std::shared_ptr<Matcher> matcher_;
  Matcher::Key key_;
  std::shared_ptr<Matcher::Op> op_;
};

namespace {
// A request that failed when it was posted.
class FailedRequest : public Request {
 public:
  explicit FailedRequest(Failure f) : f_(std::move(f)) {}
  bool wait(Deadline) override { throw_failure(f_); }
  bool test() override { throw_failure(f_); }

 private:
  Failure f_;
};
}  // namespace

RequestPtr Matcher::post_send(Key key, const void* data, size_t bytes) {
  return post(key, true, data, nullptr, bytes);
}
RequestPtr Matcher::post_recv(Key key, void* data, size_t bytes) {
  return post(key, false, nullptr, data, bytes);
}

RequestPtr Matcher::post(Key key, bool is_send, const void* src, void* dst, size_t bytes) {
  auto op = std::make_shared<Op>();
  op->src = src;
  op->dst = dst;
  op->bytes = bytes;
  std::shared_ptr<Op> peer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return std::make_unique<FailedRequest>(*closed_);
    if (auto it = dead_sources_.find(key.src); it != dead_sources_.end()) {
      return std::make_unique<FailedRequest>(it->second);
    }
    Queues& q = queues_[key];
    auto& other = is_send ? q.recvs : q.sends;
    if (other.empty()) {
      (is_send ? q.sends : q.recvs).push_back(op);
      return std::make_unique<MatchRequest>(shared_from_this(), key, op);
    }
    peer = std::move(other.front());
    other.pop_front();
    if (q.sends.empty() && q.recvs.empty()) queues_.erase(key);
    for (Op* o : {op.get(), peer.get()}) {
      std::lock_guard<std::mutex> l(o->mu);
      o->status = Op::in_flight;
    }
  }
  Op& s = is_send ? *op : *peer;
  Op& r = is_send ? *peer : *op;
  if (s.bytes != r.bytes) {
    Failure f{FailKind::remote, "message size mismatch: the sender sent " + std::to_string(s.bytes) +
                                    " bytes, the receiver expected " + std::to_string(r.bytes) +
                                    " (tag " + std::to_string(key.tag) + ")"};
    s.finish(Op::failed, f);
    r.finish(Op::failed, f);
  } else {
    if (s.bytes) std::memcpy(r.dst, s.src, s.bytes);
    s.finish(Op::done);
    r.finish(Op::done);
  }
  return std::make_unique<MatchRequest>(nullptr, key, op);
}

void Matcher::withdraw(const Key& key, const std::shared_ptr<Op>& op) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = queues_.find(key);
  if (it == queues_.end()) return;
  for (auto* dq : {&it->second.sends, &it->second.recvs}) {
    for (auto o = dq->begin(); o != dq->end(); ++o) {
      if (*o == op) {
        dq->erase(o);
        if (it->second.sends.empty() && it->second.recvs.empty()) queues_.erase(it);
        return;
      }
    }
  }
}

void Matcher::fail_source(uint64_t src, const Failure& f) {
  std::vector<std::shared_ptr<Op>> victims;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dead_sources_.emplace(src, f);
    for (auto it = queues_.begin(); it != queues_.end();) {
      if (it->first.src == src) {
        for (auto& o : it->second.sends) victims.push_back(std::move(o));
        for (auto& o : it->second.recvs) victims.push_back(std::move(o));
        it = queues_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& o : victims) o->finish(Op::failed, f);
}

void Matcher::close(const Failure& f) {
  std::vector<std::shared_ptr<Op>> victims;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!closed_) closed_ = f;
    for (auto& [k, q] : queues_) {
      for (auto& o : q.sends) victims.push_back(std::move(o));
      for (auto& o : q.recvs) victims.push_back(std::move(o));
    }
    queues_.clear();
  }
  for (auto& o : victims) o->finish(Op::failed, f);
}

}  // namespace tessera::comms
