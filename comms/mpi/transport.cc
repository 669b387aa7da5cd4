#include <tessera/comms/mpi/transport.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>

#include <climits>
#include <cstdlib>
#include <thread>

namespace tessera::comms::mpi {

namespace {

std::once_flag g_init_once;
int g_provided = MPI_THREAD_SINGLE;
std::atomic<bool> g_any_aborted{false};

void finalize_at_exit() {
  // After a communication failure MPI_Finalize can block forever on a dead peer: skip it and
  // let mpirun report the abnormal exit instead of hanging.
  if (g_any_aborted.load()) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

// RAII for the optional serialization mutex.
struct MaybeLock {
  std::mutex* m;
  explicit MaybeLock(std::mutex* mu) : m(mu) { if (m) m->lock(); }
  ~MaybeLock() { if (m) m->unlock(); }
};

}  // namespace

int ensure_mpi_initialized() {
  std::call_once(g_init_once, [] {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) {
      MPI_Query_thread(&g_provided);
      return;
    }
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &g_provided);
    TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Init_thread failed: ",
                     MpiTransport::error_string(rc));
    std::atexit(finalize_at_exit);
  });
  return g_provided;
}

bool test_until(MPI_Request& req, Deadline deadline, std::mutex* serial, const std::string& what) {
  for (int i = 0;; ++i) {
    int flag = 0, rc;
    {
      MaybeLock lock(serial);
      rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) throw NetworkError(what + " failed: " + MpiTransport::error_string(rc));
    if (flag) return true;
    if (Clock::now() >= deadline) return false;
    if (i < 64) continue;
    if (i < 4096) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

std::string MpiTransport::error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

MpiTransport::MpiTransport() {
  int provided = ensure_mpi_initialized();
  if (provided < MPI_THREAD_MULTIPLE) serial_ = std::make_unique<std::mutex>();
  // MPI_Comm_dup would block without a deadline until every rank gets here: a rank that
  // hangs before making its transport would hang the others. The non-blocking duplicate is
  // polled against the communication deadline instead.
  const auto timeout = default_comm_timeout();
  const auto deadline = Clock::now() + timeout;
  MPI_Request dup;
  // MPI writes the new handle when the duplicate completes, which after a timeout is later:
  // into a slot that outlives this object (leaked then, 8 bytes).
  auto* slot = new MPI_Comm(MPI_COMM_NULL);
  int rc;
  {
    MaybeLock lock(serial_.get());
    rc = MPI_Comm_idup(MPI_COMM_WORLD, slot, &dup);
  }
  if (rc != MPI_SUCCESS) {
    delete slot;
    TESSERA_THROW(NetworkError, "MPI_Comm_idup failed: ", error_string(rc));
  }
  if (test_until(dup, deadline, serial_.get(), "MPI_Comm_idup")) {
    comm_ = *slot;
    delete slot;
  } else {
    int rank = -1, size = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    g_any_aborted = true;  // MPI_Finalize would wait for the missing ranks
    throw TimeoutError("mpi transport of rank " + std::to_string(rank) + ": not every one of the " +
                       std::to_string(size) + " ranks made its transport (MPI_Comm_idup) within " +
                       std::to_string(timeout.count()) + " ms (TESSERA_COMM_TIMEOUT_MS)");
  }
  MaybeLock lock(serial_.get());
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  void* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  if (flag && ub) max_tag_ = static_cast<uint64_t>(*static_cast<int*>(ub));
  log::get("comms")->debug("mpi: rank {} of {}, thread level {}, MPI_TAG_UB {}", rank_, size_,
                           provided, max_tag_);
}

MpiTransport::~MpiTransport() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL && !aborted_) {
    MaybeLock lock(serial_.get());
    MPI_Comm_free(&comm_);
  }
}

void MpiTransport::check_not_aborted() const {
  if (!aborted_.load()) return;
  throw CommError("mpi transport of rank " + std::to_string(rank_) + " was aborted: " + aborted_reason());
}

std::string MpiTransport::aborted_reason() const {
  std::lock_guard<std::mutex> lock(mu_);
  return abort_reason_;
}

void MpiTransport::abort(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (aborted_.exchange(true)) return;
  abort_reason_ = reason;
  g_any_aborted = true;
}

void MpiTransport::check_peer(int peer, uint64_t tag, size_t bytes) const {
  TESSERA_CHECK_INDEX(peer >= 0 && peer < size_, "mpi: peer rank ", peer, " is outside the world of ",
                      size_, " ranks");
  TESSERA_CHECK(tag <= max_tag_, "mpi: tag ", tag, " is above MPI_TAG_UB (", max_tag_, ")");
  TESSERA_CHECK(bytes <= static_cast<size_t>(INT_MAX), "mpi: a message of ", bytes,
                " bytes is above MPI's limit of ", INT_MAX, " per message; use smaller chunks");
}

namespace {

class MpiRequest : public Request {
 public:
  MpiRequest(const MpiTransport& t, MPI_Request r, bool is_send, int peer, size_t bytes)
      : t_(t), req_(r), is_send_(is_send), peer_(peer), bytes_(bytes) {}

  ~MpiRequest() override {
    if (req_ == MPI_REQUEST_NULL) return;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (is_send_) {
      MaybeLock lock(t_.serial());
      MPI_Request_free(&req_);
      return;
    }
    // A receive that has matched a message can no longer be cancelled: it completes only when
    // the sender's data has arrived, which a hung sender never sends. Wait a bounded time,
    // then let MPI keep the request (its buffer may still be written; see transport.h).
    {
      MaybeLock lock(t_.serial());
      MPI_Cancel(&req_);
    }
    try {
      if (test_until(req_, deadline_after(std::chrono::seconds(1)), t_.serial(), "MPI_Test")) return;
    } catch (const NetworkError&) {  // a destructor does not throw; MPI keeps the request
    }
    log::get("comms")->warn("mpi: rank {}: a receive of {} bytes from rank {} could not be cancelled; "
                            "leaving it to MPI (its buffer may still be written)", t_.rank(), bytes_, peer_);
    MaybeLock lock(t_.serial());
    MPI_Request_free(&req_);
  }

  bool test() override {
    if (req_ == MPI_REQUEST_NULL) return true;
    t_.check_not_aborted();
    int flag = 0;
    MPI_Status st;
    int rc;
    {
      MaybeLock lock(t_.serial());
      rc = MPI_Test(&req_, &flag, &st);
    }
    if (rc != MPI_SUCCESS) {
      req_ = MPI_REQUEST_NULL;
      int cls = 0;
      MPI_Error_class(rc, &cls);
      std::string msg = std::string("MPI_Test on a ") + (is_send_ ? "send to" : "receive from") +
                        " rank " + std::to_string(peer_) + " failed: " + MpiTransport::error_string(rc);
      if (cls == MPI_ERR_TRUNCATE) {
        throw RemoteError("message size mismatch: rank " + std::to_string(peer_) +
                          " sent more than the " + std::to_string(bytes_) + " bytes expected (" + msg + ")");
      }
      throw NetworkError(msg);
    }
    if (!flag) return false;
    if (!is_send_) {
      int got = 0;
      MPI_Get_count(&st, MPI_BYTE, &got);
      if (static_cast<size_t>(got) != bytes_) {
        throw RemoteError("message size mismatch: rank " + std::to_string(peer_) + " sent " +
                          std::to_string(got) + " bytes, the receiver expected " + std::to_string(bytes_));
      }
    }
    return true;
  }

  bool wait(Deadline deadline) override {
    // Spin briefly (latency), then yield, then sleep a little (do not starve peers sharing
    // cores), checking the deadline throughout.
    for (int i = 0;; ++i) {
      if (test()) return true;
      if (Clock::now() >= deadline) return false;
      if (i < 64) continue;
      if (i < 4096) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

 private:
  const MpiTransport& t_;
  MPI_Request req_;
  bool is_send_;
  int peer_;
  size_t bytes_;
};

}  // namespace

RequestPtr MpiTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  check_not_aborted();
  check_peer(peer, tag, bytes);
  MPI_Request r;
  int rc;
  {
    MaybeLock lock(serial_.get());
    rc = MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, static_cast<int>(tag), comm_, &r);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Isend to rank ", peer, " failed: ",
                   error_string(rc));
  return std::make_unique<MpiRequest>(*this, r, true, peer, bytes);
}

RequestPtr MpiTransport::irecv(int peer, uint64_t tag, void* data, size_t bytes) {
  check_not_aborted();
  check_peer(peer, tag, bytes);
  MPI_Request r;
  int rc;
  {
    MaybeLock lock(serial_.get());
    rc = MPI_Irecv(data, static_cast<int>(bytes), MPI_BYTE, peer, static_cast<int>(tag), comm_, &r);
  }
  TESSERA_CHECK_AS(NetworkError, rc == MPI_SUCCESS, "MPI_Irecv from rank ", peer, " failed: ",
                   error_string(rc));
  return std::make_unique<MpiRequest>(*this, r, false, peer, bytes);
}

}  // namespace tessera::comms::mpi
