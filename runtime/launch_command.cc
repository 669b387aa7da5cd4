#include <tessera/runtime/launch_command.h>

#include <tessera/comms/transport.h>
#include <tessera/core/error.h>
#include <tessera/runtime/info.h>

#include <arpa/inet.h>
#include <sched.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <tuple>
#include <thread>

namespace tessera {
namespace {

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  TESSERA_CHECK_AS(NetworkError, fd >= 0, "launch: socket() failed: ", std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
  ::close(fd);
  TESSERA_CHECK_AS(NetworkError, ok, "launch: cannot find a free port on 127.0.0.1: ", std::strerror(errno));
  return ntohs(a.sin_port);
}

// The CPUs in core order: by package, then core, so that the hardware threads of one core are
// neighbours (Linux usually numbers a core's second thread N/2 further on). Falls back to id
// order where sysfs does not tell.
std::vector<int> in_core_order(std::vector<int> cpus) {
  auto read_id = [](int cpu, const char* what) {
    std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/" + what);
    long v = -1;
    f >> v;
    return f ? v : -1L;
  };
  std::vector<std::tuple<long, long, int>> keyed;
  for (int c : cpus) keyed.emplace_back(read_id(c, "physical_package_id"), read_id(c, "core_id"), c);
  std::sort(keyed.begin(), keyed.end());
  for (size_t i = 0; i < keyed.size(); ++i) cpus[i] = std::get<2>(keyed[i]);
  return cpus;
}

// Rank r's share of the launcher's CPUs when binding: the r-th of n equal contiguous blocks of
// them in core order (the first blocks one CPU longer when they do not divide evenly).
std::vector<int> block_of(const std::vector<int>& cpus, int n, int r) {
  const size_t base = cpus.size() / n, extra = cpus.size() % n;
  const size_t lo = r * base + std::min<size_t>(r, extra), len = base + (static_cast<size_t>(r) < extra ? 1 : 0);
  return std::vector<int>(cpus.begin() + static_cast<long>(lo), cpus.begin() + static_cast<long>(lo + len));
}

constexpr char kUsage[] = "usage: tessera launch -n N [--bind core|none] -- <command> [options]   (1 <= N <= 256)\n";

}  // namespace

int launch_command(const std::vector<std::string>& args) {
  int n = 0;
  std::string bind = "core";
  size_t i = 0;
  for (; i < args.size() && args[i] != "--"; ++i) {
    if ((args[i] == "-n" || args[i] == "--np") && i + 1 < args.size()) {
      n = std::atoi(args[++i].c_str());
    } else if (args[i] == "--bind" && i + 1 < args.size()) {
      bind = args[++i];
      if (bind != "core" && bind != "none") {
        std::cerr << "tessera launch: --bind '" << bind << "' is neither 'core' nor 'none'\n" << kUsage;
        return 2;
      }
    } else {
      std::cerr << "tessera launch: unknown option '" << args[i] << "'\n" << kUsage;
      return 2;
    }
  }
  if (n < 1 || n > 256 || i + 1 >= args.size()) {
    std::cerr << kUsage;
    return 2;
  }
  // Like mpirun's default for few ranks: each rank on its own block of this process's CPUs, so
  // its compute and transport threads stay on the cores whose caches hold their data (cnn
  // data-parallel over grpc on 2 cores: 8,200 -> 8,800 images/s). More ranks than CPUs: unbound.
  const std::vector<int> cpus = in_core_order(usable_cpus());
  const bool binding = bind == "core" && !cpus.empty() && static_cast<size_t>(n) <= cpus.size();
  std::vector<std::string> cmd(args.begin() + static_cast<long>(i) + 1, args.end());
  std::string coordinator = "127.0.0.1:" + std::to_string(free_port());
  // How long ranks get to report a failure themselves once one has failed (read before any
  // rank starts, so that a bad TESSERA_COMM_TIMEOUT_MS is reported once, here).
  const auto grace_after_failure = comms::default_comm_timeout() + std::chrono::seconds(5);
  std::vector<pid_t> pids;
  const pid_t launcher = ::getpid();
  for (int r = 0; r < n; ++r) {
    pid_t pid = ::fork();
    TESSERA_CHECK_AS(Error, pid >= 0, "launch: fork failed: ", std::strerror(errno));
    if (pid == 0) {
      // The ranks end with the launcher, however it ends (a kill of the launcher alone would
      // otherwise leave them training, or waiting on each other until their deadline).
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != launcher) ::_exit(1);  // it ended before prctl took effect
      if (binding) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c : block_of(cpus, n, r)) CPU_SET(c, &set);
        if (::sched_setaffinity(0, sizeof set, &set) != 0) std::perror("tessera launch: sched_setaffinity");
      }
      ::setenv("TESSERA_RANK", std::to_string(r).c_str(), 1);
      ::setenv("TESSERA_WORLD_SIZE", std::to_string(n).c_str(), 1);
      ::setenv("TESSERA_COORDINATOR", coordinator.c_str(), 1);
      std::vector<char*> argv;
      std::string self = "tessera";
      argv.push_back(self.data());
      for (auto& a : cmd) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::perror("tessera launch: exec");
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  int failed_rank = -1, failed_status = 0, remaining = n;
  // The ranks not yet reaped (only those may be killed: a reaped pid may belong to another process).
  struct Alive {
    std::mutex mu;
    std::vector<pid_t> pids;
  };
  auto alive = std::make_shared<Alive>();
  alive->pids = pids;
  while (remaining > 0) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, 0);
    if (pid < 0) break;
    --remaining;
    {
      std::lock_guard<std::mutex> lock(alive->mu);
      alive->pids.erase(std::remove(alive->pids.begin(), alive->pids.end(), pid), alive->pids.end());
    }
    int rank = static_cast<int>(std::find(pids.begin(), pids.end(), pid) - pids.begin());
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok && failed_rank < 0) {
      failed_rank = rank;
      failed_status = status;
      // Give the others their deadline and a little more to report the failure themselves,
      // then end them (SIGKILL: a stopped or hung rank would not act on SIGTERM).
      const auto grace = grace_after_failure;
      std::thread([alive, grace] {
        std::this_thread::sleep_for(grace);
        std::lock_guard<std::mutex> lock(alive->mu);
        for (pid_t p : alive->pids) ::kill(p, SIGKILL);
      }).detach();
    }
  }
  if (failed_rank >= 0) {
    std::cerr << "tessera launch: rank " << failed_rank << " failed ("
              << (WIFEXITED(failed_status) ? "exit status " + std::to_string(WEXITSTATUS(failed_status))
                                           : "signal " + std::to_string(WTERMSIG(failed_status)))
              << ")\n";
    return 1;
  }
  return 0;
}

}  // namespace tessera
