#include <tessera/comms/mpi/transport.h>
#include <tessera/core/error.h>
#include <tessera/core/log.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <random>
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

// Calls done() until it returns true (true) or the deadline passes (false): spins briefly
// (latency), then yields, then sleeps 50 us between calls (so as not to starve ranks sharing
// the cores).
template <class Done>
bool poll_until(Deadline deadline, Done&& done) {
  for (int i = 0;; ++i) {
    if (done()) return true;
    if (Clock::now() >= deadline) return false;
    if (i < 64) continue;
    if (i < 4096) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
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
  return poll_until(deadline, [&] {
    int flag = 0, rc;
    {
      MaybeLock lock(serial);
      rc = MPI_Test(&req, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) throw NetworkError(what + " failed: " + MpiTransport::error_string(rc));
    return flag != 0;
  });
}

std::string MpiTransport::error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(code, buf, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(buf, static_cast<size_t>(len));
}

namespace {

// Where this process's shared memory is: the host name, its boot, and /dev/shm's identity
// (containers on one host may not share it). Ranks with equal identities share memory.
struct HostId {
  char text[192] = {};
};

HostId host_id() {
  HostId id;
  char host[64] = {};
  gethostname(host, sizeof host - 1);
  std::string boot;
  if (FILE* f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
    char b[64] = {};
    if (std::fgets(b, sizeof b, f)) boot = b;
    std::fclose(f);
  }
  struct stat st {};
  stat("/dev/shm", &st);
  std::snprintf(id.text, sizeof id.text, "%s|%s|%llu:%llu", host, boot.c_str(),
                static_cast<unsigned long long>(st.st_dev), static_cast<unsigned long long>(st.st_ino));
  return id;
}

}  // namespace

MpiTransport::MpiTransport() {
  int provided = ensure_mpi_initialized();
  if (provided < MPI_THREAD_MULTIPLE) serial_ = std::make_unique<std::mutex>();
  // Blocking collectives (MPI_Comm_dup, MPI_Comm_split_type) would wait without a deadline
  // until every rank gets here: a rank that hangs before making its transport would hang the
  // others. Three non-blocking ones are polled against the communication deadline instead:
  // the transport's communicator, a second one for shared-memory setup and acknowledgements,
  // and the gathering of every rank's host identity.
  const auto timeout = default_comm_timeout();
  const auto deadline = Clock::now() + timeout;
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  // MPI writes the results when the calls complete, which after a timeout is later: into
  // memory that outlives this object (leaked then).
  struct Startup {
    MPI_Comm comm = MPI_COMM_NULL, ctrl = MPI_COMM_NULL;
    HostId mine;
    std::vector<HostId> all;
    MPI_Request reqs[3] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  };
  auto* st = new Startup;
  st->mine = host_id();
  // TESSERA_MPI_SHARED=0: no shared memory; every message goes through MPI. Part of the host
  // identity, so that ranks agree on who shares memory even if only some of them set it.
  const char* shared_env = std::getenv("TESSERA_MPI_SHARED");
  if (shared_env && std::string(shared_env) == "0") {
    int world_rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    const std::string id = st->mine.text;
    std::snprintf(st->mine.text, sizeof st->mine.text, "private %d|%s", world_rank, id.c_str());
  }
  st->all.resize(static_cast<size_t>(world));
  int rc;
  {
    MaybeLock lock(serial_.get());
    rc = MPI_Comm_idup(MPI_COMM_WORLD, &st->comm, &st->reqs[0]);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_idup(MPI_COMM_WORLD, &st->ctrl, &st->reqs[1]);
    if (rc == MPI_SUCCESS)
      rc = MPI_Iallgather(&st->mine, sizeof(HostId), MPI_BYTE, st->all.data(), sizeof(HostId), MPI_BYTE,
                          MPI_COMM_WORLD, &st->reqs[2]);
  }
  if (rc != MPI_SUCCESS) TESSERA_THROW(NetworkError, "mpi transport start-up (MPI_Comm_idup) failed: ", error_string(rc));
  for (MPI_Request& r : st->reqs) {
    if (test_until(r, deadline, serial_.get(), "mpi transport start-up")) continue;
    int rank = -1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    g_any_aborted = true;  // MPI_Finalize would wait for the missing ranks
    throw TimeoutError("mpi transport of rank " + std::to_string(rank) + ": not every one of the " +
                       std::to_string(world) + " ranks made its transport (MPI_Comm_idup, MPI_Iallgather) within " +
                       std::to_string(timeout.count()) + " ms (TESSERA_COMM_TIMEOUT_MS)");
  }
  comm_ = st->comm;
  ctrl_comm_ = st->ctrl;
  std::vector<HostId> ids = std::move(st->all);
  delete st;
  MaybeLock lock(serial_.get());
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(ctrl_comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
  void* ub = nullptr;
  int flag = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &ub, &flag);
  if (flag && ub) max_tag_ = static_cast<uint64_t>(*static_cast<int*>(ub));
  host_rank_.assign(static_cast<size_t>(size_), -1);
  const std::string me(ids[static_cast<size_t>(rank_)].text);
  for (int w = 0; w < size_; ++w) {
    if (me != ids[static_cast<size_t>(w)].text) continue;
    host_rank_[static_cast<size_t>(w)] = static_cast<int>(host_members_.size());
    host_members_.push_back(w);
  }
  direct_seq_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(size_));
  log::get("comms")->debug("mpi: rank {} of {}, thread level {}, MPI_TAG_UB {}, {} rank(s) on this host",
                           rank_, size_, provided, max_tag_, host_members_.size());
}

MpiTransport::~MpiTransport() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MaybeLock lock(serial_.get());
  // Small messages (and cancelled receives) still in MPI's hands: their memory stays allocated.
  for (auto& s : small_sends_) {
    int flag = 0;
    MPI_Test(&s.second, &flag, MPI_STATUS_IGNORE);
    if (flag) continue;
    MPI_Request_free(&s.second);
    new std::shared_ptr<void>(std::move(s.first));  // leaked on purpose: MPI may still use it
  }
  if (comm_ != MPI_COMM_NULL && !aborted_) {
    MPI_Comm_free(&comm_);
    if (ctrl_comm_ != MPI_COMM_NULL) MPI_Comm_free(&ctrl_comm_);
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

constexpr uint64_t kDescriptorMagic = 0x7465737365726131ull;  // "tessera1"
constexpr int kSetupTag = 1, kMappedTag = 2, kAckTagBase = 16;

// What a direct send carries over MPI instead of its bytes.
struct Descriptor {
  uint64_t magic = kDescriptorMagic;
  uint64_t seq = 0;     // this sender's direct send number to this receiver
  uint64_t region = 0;  // the sender's region id
  uint64_t offset = 0;  // in the region
  uint64_t bytes = 0;
};

// The receiver's answer: the bytes were copied (or refused), the sender's buffer is free.
struct Ack {
  uint64_t seq = 0;
  uint64_t status = 0;  // 0 read; 1 size mismatch (`expected` bytes); 2 unknown region; 3 given up
  uint64_t expected = 0;
};

int ack_tag(uint64_t seq, uint64_t max_tag) {
  return kAckTagBase + static_cast<int>(seq % (max_tag - kAckTagBase));
}

class MpiRequest : public Request {
 public:
  MpiRequest(MpiTransport& t, MPI_Request r, bool is_send, int peer, size_t bytes, void* data = nullptr,
             Transport::Consume consume = nullptr)
      : t_(t), req_(r), is_send_(is_send), peer_(peer), bytes_(bytes), data_(data), consume_(std::move(consume)) {}

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
      if (test_until(req_, deadline_after(std::chrono::seconds(1)), t_.serial(), "MPI_Test")) {
        // A descriptor nobody will serve: tell its sender, which would otherwise wait for the
        // acknowledgement until its deadline.
        if (const Descriptor* d = descriptor_in_buffer(sizeof(Descriptor))) ack(*d, 3);
        return;
      }
    } catch (const CommError&) {  // a destructor does not throw; MPI keeps the request
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
      if (const Descriptor* d = descriptor_in_buffer(static_cast<size_t>(got))) {
        serve(*d);
        return true;
      }
      if (static_cast<size_t>(got) == bytes_ && consume_) consume_(data_);
      if (static_cast<size_t>(got) != bytes_) {
        throw RemoteError("message size mismatch: rank " + std::to_string(peer_) + " sent " +
                          std::to_string(got) + " bytes, the receiver expected " + std::to_string(bytes_));
      }
    }
    return true;
  }

  bool wait(Deadline deadline) override { return poll_until(deadline, [&] { return test(); }); }

 private:
  // A descriptor arrived in the buffer instead of the bytes: copy them from the sender's shared
  // memory over it, and acknowledge (which completes the send).
  // The descriptor a completed receive of `got` bytes holds, or null (ordinary bytes).
  const Descriptor* descriptor_in_buffer(size_t got) {
    if (got != sizeof(Descriptor) || bytes_ < sizeof(Descriptor) || !t_.shares_memory_with(peer_)) return nullptr;
    std::memcpy(&desc_, data_, sizeof desc_);
    return desc_.magic == kDescriptorMagic && desc_.bytes >= MpiTransport::kDirectMinBytes ? &desc_ : nullptr;
  }
  void ack(const Descriptor& d, uint64_t status) {
    auto a = std::make_shared<Ack>();
    a->seq = d.seq;
    a->status = status;
    a->expected = bytes_;
    t_.send_small(peer_, ack_tag(d.seq, t_.max_tag()), a, a.get(), sizeof(Ack),
                  "an acknowledgement to rank " + std::to_string(peer_));
  }
  void serve(const Descriptor& d) {
    uint64_t status = 0;
    auto [base, len] = t_.peer_region(peer_, static_cast<uint32_t>(d.region));
    if (d.bytes != bytes_) {
      status = 1;
    } else if (!base || d.offset > len || d.bytes > len - d.offset) {
      status = 2;
    } else {
      // Before the acknowledgement, which frees the sender's buffer.
      try {
        if (consume_) consume_(base + d.offset);
        else std::memcpy(data_, base + d.offset, bytes_);
      } catch (...) {
        ack(d, 3);
        throw;
      }
      t_.count_direct(false);
    }
    ack(d, status);
    if (status == 1)
      throw RemoteError("message size mismatch: rank " + std::to_string(peer_) + " sent " + std::to_string(d.bytes) +
                        " bytes, the receiver expected " + std::to_string(bytes_));
    if (status == 2)
      throw RemoteError("mpi: rank " + std::to_string(peer_) + " sent a descriptor of shared memory (region " +
                        std::to_string(d.region) + ") this rank has not mapped");
  }

  MpiTransport& t_;
  MPI_Request req_;
  bool is_send_;
  int peer_;
  size_t bytes_;
  void* data_;  // receives: the buffer
  Transport::Consume consume_;
  Descriptor desc_;
};

}  // namespace

// ---- the direct path: descriptors for sends from shared memory ----

namespace {

struct Mapping {
  void* p = MAP_FAILED;
  size_t n = 0;
  Mapping(void* ptr, size_t len) : p(ptr), n(len) {}
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, n);
  }
};

class SharedHandle : public SharedMemory {
 public:
  SharedHandle(std::shared_ptr<Mapping> m, size_t bytes) : m_(std::move(m)), bytes_(bytes) {}
  void* data() const override { return m_->p; }
  size_t bytes() const override { return bytes_; }

 private:
  std::shared_ptr<Mapping> m_;
  size_t bytes_;
};

// A setup message between the ranks of a host: the name and size of a rank's new memory.
struct SetupMsg {
  uint64_t magic = kDescriptorMagic;
  uint64_t id = 0;
  uint64_t bytes = 0;
  uint64_t ok = 1;
  char name[64] = {};
  char error[160] = {};
};

std::string errno_text() { return std::strerror(errno); }

}  // namespace

struct MpiTransport::Region {
  uint32_t id = 0;
  std::shared_ptr<Mapping> own;
  size_t bytes = 0;
  std::vector<std::shared_ptr<Mapping>> peers;  // by host rank (this rank's slot empty)
};

std::shared_ptr<SharedMemory> MpiTransport::allocate_shared(size_t bytes) {
  check_not_aborted();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t len = (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  auto region = std::make_shared<Region>();
  {
    std::lock_guard<std::mutex> lock(regions_mu_);
    region->id = static_cast<uint32_t>(regions_.size());
  }
  region->bytes = len;
  const int hsize = host_ranks(), me = host_rank(rank_);
  region->peers.resize(static_cast<size_t>(hsize));
  if (hsize == 1) return allocate_private(bytes);  // nobody to share with
  // This rank's memory: a POSIX shared-memory object that the host peers map by name, unlinked
  // once they have (or on failure), so nothing is left in /dev/shm. Its pages are reserved up
  // front (posix_fallocate): a full /dev/shm is then an error here, not a SIGBUS later. A rank
  // that fails still takes part in the exchange, so that every rank of the host fails alike.
  std::random_device rd;
  std::string name = "/tessera-" + std::to_string(getpid()) + "-" + std::to_string(region->id) + "-" +
                     std::to_string(rd() % 1000000);
  struct Unlink {
    std::string n;
    bool created = false;
    ~Unlink() {
      if (created) shm_unlink(n.c_str());
    }
  } unlink_at_exit{name};
  std::string failure;
  int fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) {
    failure = "shm_open: " + errno_text();
  } else {
    unlink_at_exit.created = true;
    if (int e = posix_fallocate(fd, 0, static_cast<off_t>(len)); e != 0) {
      failure = "reserving " + std::to_string(len) + " bytes in /dev/shm: " + std::strerror(e);
    } else {
      void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (p == MAP_FAILED) failure = "mmap: " + errno_text();
      else region->own = std::make_shared<Mapping>(p, len);
    }
    close(fd);
  }
  const auto timeout = default_comm_timeout();
  const Deadline deadline = Clock::now() + timeout;
  // The messages of both rounds, kept by the transport after a timeout until MPI lets go.
  struct Msgs {
    SetupMsg sent, sent2;
    std::vector<SetupMsg> all, mapped;
  };
  auto msgs = std::make_shared<Msgs>();
  msgs->all.resize(static_cast<size_t>(hsize));
  msgs->mapped.resize(static_cast<size_t>(hsize));
  // Exchanges one message with every host peer on `tag`. A peer that does not answer in time
  // leaves this transport aborted (the ranks no longer agree on the regions) and throws a
  // TimeoutError naming it.
  auto exchange = [&](int tag, const void* mine, void* theirs, size_t msg_bytes, const char* step) {
    std::vector<MPI_Request> recvs(static_cast<size_t>(hsize), MPI_REQUEST_NULL), sends = recvs;
    {
      MaybeLock lock(serial_.get());
      for (int q = 0; q < hsize; ++q) {
        if (q == me) continue;
        const int w = host_members_[static_cast<size_t>(q)];
        MPI_Irecv(static_cast<char*>(theirs) + q * msg_bytes, static_cast<int>(msg_bytes), MPI_BYTE, w, tag,
                  ctrl_comm_, &recvs[static_cast<size_t>(q)]);
        MPI_Isend(mine, static_cast<int>(msg_bytes), MPI_BYTE, w, tag, ctrl_comm_, &sends[static_cast<size_t>(q)]);
      }
    }
    std::vector<int> missing;
    for (int q = 0; q < hsize; ++q) {
      if (q == me) continue;
      if (!test_until(recvs[static_cast<size_t>(q)], deadline, serial_.get(), "allocate_shared"))
        missing.push_back(host_members_[static_cast<size_t>(q)]);
    }
    for (int q = 0; q < hsize && missing.empty(); ++q) {
      if (q != me && !test_until(sends[static_cast<size_t>(q)], deadline, serial_.get(), "allocate_shared"))
        missing.push_back(host_members_[static_cast<size_t>(q)]);
    }
    if (missing.empty()) return;
    {
      MaybeLock lock(serial_.get());
      for (MPI_Request& r : recvs)
        if (r != MPI_REQUEST_NULL) MPI_Cancel(&r);
    }
    for (auto* reqs : {&recvs, &sends})
      for (MPI_Request& r : *reqs)
        if (r != MPI_REQUEST_NULL) adopt(msgs, r);
    std::string who;
    for (int w : missing) who += (who.empty() ? "" : ", ") + std::to_string(w);
    const std::string what = "mpi: allocate_shared (region " + std::to_string(region->id) + ", " + step + ") on rank " +
                             std::to_string(rank_) + ": rank(s) " + who + " of this host did not take part within " +
                             std::to_string(timeout.count()) + " ms";
    abort(what);
    throw TimeoutError(what);
  };
  // Every rank of the host fails if one did, naming it and its reason.
  auto fail_if_any = [&](const std::vector<SetupMsg>& msgs, const char* step) {
    std::string why;
    for (int q = 0; q < hsize; ++q) {
      const SetupMsg& m = msgs[static_cast<size_t>(q)];
      if (m.ok) continue;
      why += (why.empty() ? "" : "; ") + std::string("rank ") + std::to_string(host_members_[static_cast<size_t>(q)]) +
             ": " + std::string(m.error, strnlen(m.error, sizeof m.error));
    }
    if (!why.empty())
      TESSERA_THROW(OutOfMemoryError, "mpi: allocate_shared of ", len, " bytes (", step, ") failed on this host: ",
                    why, " (is /dev/shm large enough? Docker's default is 64 MB: --shm-size)");
  };
  std::vector<SetupMsg>& all = msgs->all;
  SetupMsg& mine = all[static_cast<size_t>(me)];
  mine.id = region->id;
  mine.bytes = len;
  mine.ok = failure.empty();
  std::snprintf(mine.name, sizeof mine.name, "%s", name.c_str());
  std::snprintf(mine.error, sizeof mine.error, "%s", failure.c_str());
  msgs->sent = mine;
  exchange(kSetupTag, &msgs->sent, all.data(), sizeof(SetupMsg), "exchanging names");
  for (int q = 0; q < hsize; ++q) {
    const SetupMsg& m = all[static_cast<size_t>(q)];
    TESSERA_CHECK_AS(RemoteError, m.magic == kDescriptorMagic && m.id == region->id, "mpi: allocate_shared on rank ",
                     rank_, ": rank ", host_members_[static_cast<size_t>(q)], " made its allocation number ", m.id,
                     " while this rank made number ", region->id,
                     " (every rank of a host must call allocate_shared in the same order)");
  }
  fail_if_any(all, "creating");
  // Map the peers' memory; then report success or failure once more.
  std::string map_failure;
  for (int q = 0; q < hsize && map_failure.empty(); ++q) {
    if (q == me) continue;
    const SetupMsg& m = all[static_cast<size_t>(q)];
    const int w = host_members_[static_cast<size_t>(q)];
    int pfd = shm_open(std::string(m.name, strnlen(m.name, sizeof m.name)).c_str(), O_RDONLY, 0);
    if (pfd < 0) {
      map_failure = "opening rank " + std::to_string(w) + "'s memory: " + errno_text();
      break;
    }
    void* pp = mmap(nullptr, m.bytes, PROT_READ, MAP_SHARED, pfd, 0);
    close(pfd);
    if (pp == MAP_FAILED) {
      map_failure = "mapping rank " + std::to_string(w) + "'s memory: " + errno_text();
      break;
    }
    region->peers[static_cast<size_t>(q)] = std::make_shared<Mapping>(pp, m.bytes);
  }
  {
    // Registered before the peers hear that it is mapped (their descriptors may follow at
    // once), and on every rank even if mapping failed, so region ids stay equal.
    std::lock_guard<std::mutex> lock(regions_mu_);
    regions_.push_back(region);
  }
  std::vector<SetupMsg>& mapped = msgs->mapped;
  SetupMsg& mine2 = msgs->sent2;
  mine2 = msgs->sent;
  mine2.ok = map_failure.empty();
  std::snprintf(mine2.error, sizeof mine2.error, "%s", map_failure.c_str());
  mapped[static_cast<size_t>(me)] = mine2;
  exchange(kMappedTag, &mine2, mapped.data(), sizeof(SetupMsg), "confirming the mappings");
  try {
    fail_if_any(mapped, "mapping");
  } catch (...) {
    // Unregister it everywhere alike: no send may go direct from memory a peer has not mapped.
    std::lock_guard<std::mutex> lock(regions_mu_);
    region->own = std::make_shared<Mapping>(MAP_FAILED, 0);
    region->bytes = 0;
    throw;
  }
  return std::make_shared<SharedHandle>(region->own, bytes);
}

std::shared_ptr<MpiTransport::Region> MpiTransport::region_of(const void* data, size_t bytes) const {
  const char* p = static_cast<const char*>(data);
  std::lock_guard<std::mutex> lock(regions_mu_);
  for (const auto& r : regions_) {
    const char* b = static_cast<const char*>(r->own->p);
    if (p >= b && p + bytes <= b + r->bytes) return r;
  }
  return nullptr;
}

std::pair<const char*, size_t> MpiTransport::peer_region(int peer, uint32_t id) const {
  std::lock_guard<std::mutex> lock(regions_mu_);
  if (id >= regions_.size()) return {nullptr, 0};
  const auto& m = regions_[id]->peers[static_cast<size_t>(host_rank(peer))];
  if (!m) return {nullptr, 0};
  return {static_cast<const char*>(m->p), m->n};
}

void MpiTransport::send_small(int peer, int tag, std::shared_ptr<void> owner, const void* data, size_t bytes,
                              const std::string& what) {
  MPI_Request r;
  int rc;
  {
    MaybeLock serial(serial_.get());
    rc = MPI_Isend(data, static_cast<int>(bytes), MPI_BYTE, peer, tag, ctrl_comm_, &r);
  }
  if (rc != MPI_SUCCESS) throw NetworkError("MPI_Isend of " + what + " failed: " + error_string(rc));
  adopt(std::move(owner), r);
}

void MpiTransport::adopt(std::shared_ptr<void> owner, MPI_Request r) {
  std::lock_guard<std::mutex> lock(small_mu_);
  MaybeLock serial(serial_.get());
  // Reap the completed ones first (in practice all but the newest few: they are small).
  small_sends_.erase(std::remove_if(small_sends_.begin(), small_sends_.end(),
                                    [](auto& s) {
                                      int flag = 0;
                                      MPI_Test(&s.second, &flag, MPI_STATUS_IGNORE);
                                      return flag != 0;
                                    }),
                     small_sends_.end());
  small_sends_.emplace_back(std::move(owner), r);
}

uint64_t MpiTransport::next_direct_seq(int peer) { return direct_seq_[static_cast<size_t>(peer)].fetch_add(1) + 1; }

namespace {

// A send from shared memory: the descriptor goes out over MPI; the send completes when the
// receiver acknowledges that it has copied the bytes.
class DirectSend : public Request {
 public:
  DirectSend(MpiTransport& t, int peer, uint64_t tag, const Descriptor& d)
      : t_(t), peer_(peer), msgs_(std::make_shared<Msgs>()) {
    msgs_->d = d;
    int rc;
    {
      MaybeLock lock(t_.serial());
      rc = MPI_Irecv(&msgs_->ack, sizeof(Ack), MPI_BYTE, peer, ack_tag(d.seq, t_.max_tag()), t_.ctrl_comm(),
                     &ack_req_);
      if (rc == MPI_SUCCESS)
        rc = MPI_Isend(&msgs_->d, sizeof(Descriptor), MPI_BYTE, peer, static_cast<int>(tag), t_.comm(), &desc_req_);
      if (rc != MPI_SUCCESS && ack_req_ != MPI_REQUEST_NULL) MPI_Cancel(&ack_req_);
    }
    if (rc != MPI_SUCCESS) {
      if (ack_req_ != MPI_REQUEST_NULL) t_.adopt(msgs_, ack_req_);
      ack_req_ = MPI_REQUEST_NULL;
      TESSERA_THROW(NetworkError, "MPI_Isend to rank ", peer, " failed: ", MpiTransport::error_string(rc));
    }
  }
  ~DirectSend() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // Unfinished: the transport keeps the messages' memory until MPI is done with it. The
    // receiver may still read the buffer (as MPI may for a detached send; transport.h).
    if (desc_req_ != MPI_REQUEST_NULL) t_.adopt(msgs_, desc_req_);
    if (ack_req_ != MPI_REQUEST_NULL) {
      {
        MaybeLock lock(t_.serial());
        MPI_Cancel(&ack_req_);
      }
      t_.adopt(msgs_, ack_req_);
    }
  }
  bool test() override {
    t_.check_not_aborted();
    if (!test_one(desc_req_) || !test_one(ack_req_)) return false;
    if (done_) return true;
    done_ = true;
    const Ack& ack = msgs_->ack;
    const Descriptor& d = msgs_->d;
    if (ack.seq != d.seq)
      throw RemoteError("mpi: rank " + std::to_string(peer_) + " acknowledged direct send " + std::to_string(ack.seq) +
                        " while this rank waited for " + std::to_string(d.seq));
    if (ack.status == 1)
      throw RemoteError("message size mismatch: this rank sent " + std::to_string(d.bytes) + " bytes, rank " +
                        std::to_string(peer_) + " expected " + std::to_string(ack.expected));
    if (ack.status == 3)
      throw RemoteError("mpi: rank " + std::to_string(peer_) + " gave up the receive of this message");
    if (ack.status != 0)
      throw RemoteError("mpi: rank " + std::to_string(peer_) + " could not read this rank's shared memory");
    return true;
  }
  bool wait(Deadline deadline) override { return poll_until(deadline, [&] { return test(); }); }

 private:
  bool test_one(MPI_Request& r) {
    if (r == MPI_REQUEST_NULL) return true;
    int flag = 0, rc;
    {
      MaybeLock lock(t_.serial());
      rc = MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
    }
    if (rc != MPI_SUCCESS) {
      r = MPI_REQUEST_NULL;
      throw NetworkError("MPI_Test on a direct send to rank " + std::to_string(peer_) +
                         " failed: " + MpiTransport::error_string(rc));
    }
    return flag != 0;
  }
  struct Msgs {
    Descriptor d;
    Ack ack;
  };
  MpiTransport& t_;
  int peer_;
  std::shared_ptr<Msgs> msgs_;  // shared with the transport if dropped unfinished
  MPI_Request desc_req_ = MPI_REQUEST_NULL, ack_req_ = MPI_REQUEST_NULL;
  bool done_ = false;
};

}  // namespace

RequestPtr MpiTransport::isend(int peer, uint64_t tag, const void* data, size_t bytes) {
  check_not_aborted();
  check_peer(peer, tag, bytes);
  if (bytes >= kDirectMinBytes && peer != rank_ && shares_memory_with(peer)) {
    if (auto region = region_of(data, bytes)) {
      Descriptor d;
      d.seq = next_direct_seq(peer);
      d.region = region->id;
      d.offset = static_cast<uint64_t>(static_cast<const char*>(data) - static_cast<const char*>(region->own->p));
      d.bytes = bytes;
      auto r = std::make_unique<DirectSend>(*this, peer, tag, d);
      count_direct(true);
      return r;
    }
  }
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
  return irecv_consume(peer, tag, data, bytes, nullptr);
}

RequestPtr MpiTransport::irecv_consume(int peer, uint64_t tag, void* data, size_t bytes, Consume consume) {
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
  return std::make_unique<MpiRequest>(*this, r, false, peer, bytes, data, std::move(consume));
}

}  // namespace tessera::comms::mpi
