// Point-to-point throughput of the transports between two ranks, against raw MPI_Isend /
// MPI_Irecv on the same ranks in the same run (the peer). Messages of one size stream with a
// window of outstanding requests, one way (rank 0 -> 1) and both ways at once; GB/s counts the
// bytes one rank sends per second. This is what collectives are built from: an all-reduce
// over two ranks sends and receives at once (the "both" column). The "tcp socket" row is a
// bare TCP connection over 127.0.0.1 (blocking write / read of the same bytes, a thread for
// each direction, nothing else): the ceiling of any TCP transport, gRPC included, here. The
// "latency" column is half the round trip of an 8-byte message (ping-pong). The
// "unix socket" row is the same over a Unix-domain socket with the buffers the grpc transport
// asks for: the ceiling of its stream route between co-located ranks. "grpc transport" is the
// default (co-located ranks read large messages from each other's memory, the rest goes over a
// Unix socket; TESSERA_GRPC_LOCAL=cma), "grpc over unix" keeps every byte on the Unix socket
// (=unix), "grpc over tcp" forces TCP (=tcp).
//
//   mpirun -np 2 build/benchmarks/transport_bench [--bytes N] [--total N] [--window W] [--seconds S]
//                       [--rows raw,mpi,tcp,unix,grpc,grpc-unix,grpc-tcp]   (ratios are vs the first row run)
#include <tessera/comms/mpi/transport.h>
#if defined(TESSERA_WITH_GRPC)
#include <tessera/comms/grpc/transport.h>
#endif

#include <mpi.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstddef>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tessera;
using namespace tessera::comms;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// One round: `count` messages of `bytes` each, at most `window` in flight, send and/or receive.
using Round = std::function<void(bool send, bool recv)>;
// `iters` round trips of an 8-byte message: rank 0 sends and waits for the echo, rank 1 echoes.
using PingPong = std::function<void(int iters)>;
struct Ops {
  Round round;
  PingPong ping;
};

// Half a round trip in seconds: warm-up, then enough round trips to fill the budget.
double time_pingpong(const PingPong& ping, double budget) {
  ping(20);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = now();
  ping(50);
  double one = (now() - t0) / 50;
  MPI_Allreduce(MPI_IN_PLACE, &one, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  int iters = static_cast<int>(std::clamp(budget / std::max(one, 1e-7), 50.0, 200000.0));
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = now();
  ping(iters);
  double t = (now() - t0) / iters / 2;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

// Seconds per round: warm-up, then enough rounds to fill the budget (agreed over ranks).
double time_round(const Round& round, bool send, bool recv, double budget) {
  round(send, recv);
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = now();
  round(send, recv);
  double one = now() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &one, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  int iters = static_cast<int>(std::clamp(budget / std::max(one, 1e-7), 2.0, 1000.0));
  MPI_Barrier(MPI_COMM_WORLD);
  t0 = now();
  for (int i = 0; i < iters; ++i) round(send, recv);
  double t = (now() - t0) / iters;
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return t;
}

// A TCP connection between the two ranks over 127.0.0.1: rank 0 listens on a free port and
// tells rank 1 through MPI. Returns the connected socket.
int tcp_connect_pair(int rank) {
  int port = 0, listener = -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (rank == 0) {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof a;
    if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error("tcp row: cannot listen on 127.0.0.1");
    }
    port = ntohs(a.sin_port);
  }
  MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
  int fd = -1;
  if (rank == 0) {
    fd = accept(listener, nullptr, nullptr);
    close(listener);
  } else {
    a.sin_port = htons(static_cast<uint16_t>(port));
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) fd = -1;
  }
  if (fd < 0) throw std::runtime_error("tcp row: connection failed");
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// A Unix-domain connection between the two ranks (abstract name from rank 0, through MPI), with
// SO_SNDBUF / SO_RCVBUF of `buffer` bytes as the grpc transport sets them.
int unix_connect_pair(int rank, int buffer) {
  unsigned id = rank == 0 ? std::random_device{}() : 0;
  MPI_Bcast(&id, 1, MPI_UNSIGNED, 0, MPI_COMM_WORLD);
  const std::string name = "tessera-transport-bench-" + std::to_string(id);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::memcpy(a.sun_path + 1, name.data(), name.size());
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  auto sized = [&](int fd) {
    for (int opt : {SO_SNDBUF, SO_RCVBUF}) setsockopt(fd, SOL_SOCKET, opt, &buffer, sizeof buffer);
    return fd;
  };
  int listener = -1, ok = 1;
  if (rank == 0) {
    listener = sized(socket(AF_UNIX, SOCK_STREAM, 0));
    ok = listener >= 0 && bind(listener, reinterpret_cast<sockaddr*>(&a), len) == 0 && listen(listener, 1) == 0;
  }
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (!ok) throw std::runtime_error("unix row: cannot listen");
  int fd = -1;
  if (rank == 0) {
    fd = accept(listener, nullptr, nullptr);
    close(listener);
  } else {
    fd = sized(socket(AF_UNIX, SOCK_STREAM, 0));
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), len) != 0) fd = -1;
  }
  if (fd < 0) throw std::runtime_error("unix row: connection failed");
  return fd;
}

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) throw std::runtime_error("socket row: write failed");
    p += w;
    n -= static_cast<size_t>(w);
  }
}
void read_all(int fd, char* p, size_t n) {
  while (n > 0) {
    const ssize_t r = read(fd, p, n);
    if (r <= 0) throw std::runtime_error("socket row: read failed");
    p += r;
    n -= static_cast<size_t>(r);
  }
}

}  // namespace

int main(int argc, char** argv) {
  size_t bytes = 1 << 20, total = 64 << 20;
  int window = 4;
  double seconds = 0.5;
  std::string want = "raw,mpi,tcp,unix,grpc,grpc-unix,grpc-tcp";
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value (see the header of transport_bench.cc)\n", k.c_str());
      return 2;
    }
    if (k == "--bytes") bytes = std::stoull(argv[++i]);
    else if (k == "--total") total = std::stoull(argv[++i]);
    else if (k == "--window") window = std::stoi(argv[++i]);
    else if (k == "--seconds") seconds = std::stod(argv[++i]);
    else if (k == "--rows") want = argv[++i];
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  auto mpi_t = std::make_shared<mpi::MpiTransport>();
  const int rank = mpi_t->rank();
  if (mpi_t->size() != 2) {
    if (rank == 0) std::fprintf(stderr, "transport_bench runs on exactly 2 ranks (mpirun -np 2)\n");
    return 2;
  }
  const int peer = 1 - rank;
  const size_t count = std::max<size_t>(1, total / std::max<size_t>(bytes, 1));
  std::vector<char> out(count * bytes, 1), in(count * bytes, 0);

  // Generic round and ping-pong over a transport's isend/irecv.
  auto transport_ops = [&](std::shared_ptr<Transport> tp) -> Ops {
    Ops ops;
    ops.ping = [&, tp](int iters) {
      uint64_t v = 0;
      const Deadline d = deadline_after(std::chrono::seconds(60));
      for (int i = 0; i < iters; ++i) {
        const uint64_t tag = uint64_t{1} << 20;  // one tag: matched in order
        if (rank == 0) {
          auto r = tp->irecv(peer, tag, &v, sizeof v);
          if (!tp->isend(peer, tag, &v, sizeof v)->wait(d) || !r->wait(d)) throw std::runtime_error("ping timed out");
        } else {
          if (!tp->irecv(peer, tag, &v, sizeof v)->wait(d) || !tp->isend(peer, tag, &v, sizeof v)->wait(d))
            throw std::runtime_error("pong timed out");
        }
      }
    };
    ops.round = [&, tp](bool send, bool recv) {
      std::vector<RequestPtr> sends(count), recvs(count);
      const Deadline d = deadline_after(std::chrono::seconds(60));
      size_t posted = 0;
      for (size_t j = 0; j < count; ++j) {
        // Keep `window` receives and sends in flight.
        for (; posted < count && posted < j + static_cast<size_t>(window); ++posted) {
          if (recv) recvs[posted] = tp->irecv(peer, posted, in.data() + posted * bytes, bytes);
          if (send) sends[posted] = tp->isend(peer, posted, out.data() + posted * bytes, bytes);
        }
        if (recv && !recvs[j]->wait(d)) throw std::runtime_error("receive timed out");
        if (send && !sends[j]->wait(d)) throw std::runtime_error("send timed out");
      }
    };
    return ops;
  };
  Round raw_mpi = [&](bool send, bool recv) {
    std::vector<MPI_Request> sends(count, MPI_REQUEST_NULL), recvs(count, MPI_REQUEST_NULL);
    size_t posted = 0;
    for (size_t j = 0; j < count; ++j) {
      for (; posted < count && posted < j + static_cast<size_t>(window); ++posted) {
        if (recv) MPI_Irecv(in.data() + posted * bytes, static_cast<int>(bytes), MPI_BYTE, peer,
                            static_cast<int>(posted % 30000), MPI_COMM_WORLD, &recvs[posted]);
        if (send) MPI_Isend(out.data() + posted * bytes, static_cast<int>(bytes), MPI_BYTE, peer,
                            static_cast<int>(posted % 30000), MPI_COMM_WORLD, &sends[posted]);
      }
      MPI_Wait(&recvs[j], MPI_STATUS_IGNORE);
      MPI_Wait(&sends[j], MPI_STATUS_IGNORE);
    }
  };
  PingPong raw_ping = [&](int iters) {
    uint64_t v = 0;
    for (int i = 0; i < iters; ++i) {
      if (rank == 0) {
        MPI_Send(&v, 8, MPI_BYTE, peer, 7, MPI_COMM_WORLD);
        MPI_Recv(&v, 8, MPI_BYTE, peer, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else {
        MPI_Recv(&v, 8, MPI_BYTE, peer, 7, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        MPI_Send(&v, 8, MPI_BYTE, peer, 7, MPI_COMM_WORLD);
      }
    }
  };

  // A row's resources (sockets, a transport) are made by open() when the row runs and released
  // with its Ops: an idle gRPC transport's polling threads would slow the next one.
  struct Row {
    std::string name;
    std::function<Ops()> open;
  };
  auto wanted = [&](const char* row) { return ("," + want + ",").find(std::string(",") + row + ",") != std::string::npos; };
  std::vector<Row> rows;
  if (wanted("raw")) rows.push_back({"MPI_Isend/Irecv", [&] { return Ops{raw_mpi, raw_ping}; }});
  if (wanted("mpi")) rows.push_back({"mpi transport", [&] { return transport_ops(mpi_t); }});
  // Bare sockets: the same messages as the other rows, written and read back to back.
  auto socket_ops = [&](int fd) -> Ops {
    auto owner = std::shared_ptr<int>(new int(fd), [](int* f) { close(*f); delete f; });
    Ops ops;
    ops.round = [&, owner](bool send, bool recv) {
      const int fd = *owner;
      std::thread writer;
      if (send) writer = std::thread([&] { write_all(fd, out.data(), count * bytes); });
      if (recv) read_all(fd, in.data(), count * bytes);
      if (writer.joinable()) writer.join();
    };
    ops.ping = [&, owner](int iters) {
      char v[8] = {};
      for (int i = 0; i < iters; ++i) {
        if (rank == 0) write_all(*owner, v, 8);
        read_all(*owner, v, 8);
        if (rank == 1) write_all(*owner, v, 8);
      }
    };
    return ops;
  };
  if (wanted("tcp")) rows.push_back({"tcp socket", [&] { return socket_ops(tcp_connect_pair(rank)); }});
#if defined(TESSERA_WITH_GRPC)
  const int unix_buffer = static_cast<int>(grpc::GrpcOptions{}.socket_buffer_bytes);
  if (wanted("unix")) rows.push_back({"unix socket", [&] { return socket_ops(unix_connect_pair(rank, unix_buffer)); }});
  for (const std::string local : {"cma", "unix", "tcp"}) {
    if (!wanted((local == "cma" ? std::string("grpc") : "grpc-" + local).c_str())) continue;
    rows.push_back({local == "cma" ? "grpc transport" : "grpc over " + local, [&, local] {
                      int port = rank == 0 ? grpc::pick_free_port() : 0;
                      MPI_Bcast(&port, 1, MPI_INT, 0, MPI_COMM_WORLD);
                      grpc::GrpcOptions go;
                      go.rank = rank;
                      go.world_size = 2;
                      go.coordinator = "127.0.0.1:" + std::to_string(port);
                      go.unix_local = local != "tcp";
                      go.cma_local = local == "cma";
                      if (const char* c = std::getenv("TESSERA_GRPC_CHUNK_BYTES")) go.chunk_bytes = std::stoull(c);
                      auto t = std::make_shared<grpc::GrpcTransport>(go);
                      const std::string route = t->route(peer);
                      if (route != local && rank == 0)
                        std::fprintf(stderr, "note: the grpc transport reaches its peer over %s\n", route.c_str());
                      return transport_ops(t);
                    }});
  }
#endif

  if (rank == 0) {
    std::printf("transport_bench: 2 ranks, %zu messages of %zu bytes, window %d; GB/s sent per rank; "
                "latency = half the round trip of an 8-byte message\n\n",
                count, bytes, window);
    std::printf("%-18s %12s %9s %12s %9s %12s %9s\n", "transport", "one-way GB/s", "vs peer", "both GB/s",
                "vs peer", "latency us", "vs peer");
  }
  double peer_one = 0, peer_both = 0, peer_lat = 0;
  for (Row& r : rows) {
    bool r0 = rank == 0;
    Ops ops = r.open();
    double one = time_round(ops.round, r0, !r0, seconds);
    double both = time_round(ops.round, true, true, seconds);
    double lat = time_pingpong(ops.ping, seconds / 2);
    ops = Ops{};
    if (peer_one == 0) peer_one = one, peer_both = both, peer_lat = lat;
    if (rank == 0) {
      double gb = static_cast<double>(count * bytes) / 1e9;
      std::printf("%-18s %12.2f %8.2fx %12.2f %8.2fx %12.1f %8.2fx\n", r.name.c_str(), gb / one, peer_one / one,
                  gb / both, peer_both / both, lat * 1e6, peer_lat / lat);
      std::fflush(stdout);
    }
  }
  return 0;
}
