// Failure behaviour over the grpc transport; started by run_ranks.sh with --victim 1:
//   exit: rank 1 exits mid-collective;  hang: rank 1 sleeps past the deadline;
//   stop: rank 1 freezes (SIGSTOP: no thread of it runs, its sockets stay open).
//   abort: rank 1 calls abort() while the others' large sends to it wait for their receives
//          (never posted): those sends must fail at once with the abort's reason, not time out.
//   self-abort: the others' large sends to rank 1 wait for receives rank 1 never posts, and
//          the senders abort their own transports: the sends must fail at once with the
//          abort's reason (whether still queued, being written or waiting for the ack).
//   partial: rank 1 dies while sending the others a message no receive is posted for yet (over
//          a socket, in small chunks: part of it has arrived); the receive posted afterwards
//          must fail at once naming rank 1, not wait for the rest until its deadline.
// A second argument "large" makes the messages large (see below).
// Every other rank must fail its all-reduce with a CommError naming the operation and a peer
// within the deadline (1 s) plus a margin; it prints "PASS rank R: ..." or "FAIL rank R: ...".
#include <tessera/comms/collectives.h>
#include <tessera/comms/grpc/transport.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>
#include <unistd.h>

using namespace tessera;
using namespace tessera::comms;

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "hang";
  // "large": 4 MiB per rank in 1 MiB segments, so messages are above the eager size (and, between
  // ranks that read each other's memory, travel as addresses): the victim fails mid-transfer.
  const bool large = argc > 2 && std::string(argv[2]) == "large";
  auto opts = grpc::GrpcOptions::from_env();
  auto t = std::make_shared<grpc::GrpcTransport>(opts);
  MeshComm comm(Mesh::parse("1x" + std::to_string(opts.world_size)), t);
  std::vector<float> v(large ? 1 << 20 : 1 << 18, 1.0f);
  AllreduceOptions o;
  o.count = v.size();
  o.inputs = {v.data()};
  o.outputs = {v.data()};
  o.timeout = std::chrono::milliseconds(1000);
  o.chunk_bytes = large ? 1 << 20 : 16 << 10;
  {
    // Everyone alive: works (with a generous deadline: processes start at different times).
    AllreduceOptions warm = o;
    warm.timeout = std::chrono::milliseconds(30000);
    auto w0 = std::chrono::steady_clock::now();
    allreduce(comm.world(), warm);
    allreduce(comm.world(), warm);
    std::fprintf(stderr, "rank %d: warm-up %.3f s\n", comm.rank(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - w0).count());
  }
  // Small sends complete eagerly, so a rank can finish a collective before its peers have: a
  // barrier (the victim leaves it only once every rank has entered it, i.e. finished the
  // warm-up) keeps the failure out of the warm-up; the others run it under the verdict below.
  float token = 1.0f;
  AllreduceOptions barrier;
  barrier.count = 1;
  barrier.inputs = {&token};
  barrier.outputs = {&token};
  barrier.timeout = std::chrono::milliseconds(1000);
  if (comm.rank() == 1) {
    allreduce(comm.world(), barrier);
    if (mode == "exit") {
      std::thread([] {
        std::this_thread::sleep_for(std::chrono::milliseconds(3));
        _exit(3);
      }).detach();
      try {
        for (;;) allreduce(comm.world(), o);
      } catch (...) {
      }
      _exit(3);
    }
    if (mode == "partial") {
      // 128 MiB in the transport's chunks (TESSERA_GRPC_CHUNK_BYTES, small in this test): far
      // more than gets through before the exit.
      static std::vector<char> big(size_t{128} << 20, 7);
      auto r0 = t->isend(0, 78, big.data(), big.size());
      auto r2 = opts.world_size > 2 ? t->isend(2, 78, big.data(), big.size()) : nullptr;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      _exit(3);
    }
    if (mode == "stop") raise(SIGSTOP);
    if (mode == "abort") {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the others' sends arrive
      t->abort("failure check abort");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(4000));
    _exit(0);
  }
  auto t0 = std::chrono::steady_clock::now();
  std::string verdict;
  try {
    allreduce(comm.world(), barrier);
    if (mode == "partial") {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // part arrives; rank 1 dies
      std::vector<char> got(size_t{128} << 20);
      t0 = std::chrono::steady_clock::now();
      if (!t->irecv(1, 78, got.data(), got.size())->wait(deadline_after(std::chrono::milliseconds(1000))))
        throw TimeoutError("partial: the receive from rank 1 timed out instead of failing");
      throw CommError("partial: the receive from rank 1 completed");
    }
    if (mode == "self-abort") {
      // Two sends: the first is written (waits for its ack), the second queues behind it.
      auto first = t->isend(1, 77, v.data(), v.size() * sizeof(float));
      auto second = t->isend(1, 78, v.data(), v.size() * sizeof(float));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      t0 = std::chrono::steady_clock::now();
      t->abort("self-abort check");
      for (auto* r : {&first, &second}) {
        try {
          if (!(*r)->wait(deadline_after(std::chrono::milliseconds(1000))))
            throw TimeoutError("self-abort: a send to rank 1 timed out instead of failing");
          throw TimeoutError("self-abort: a send to rank 1 completed");
        } catch (const TimeoutError&) {
          throw;
        } catch (const CommError& e) {
          if (r == &second) throw;  // judged below, as the first was
          if (!std::strstr(e.what(), "self-abort check")) throw;
        }
      }
    }
    if (mode == "abort") {
      t0 = std::chrono::steady_clock::now();
      if (!t->isend(1, 77, v.data(), v.size() * sizeof(float))->wait(deadline_after(std::chrono::milliseconds(1000))))
        throw TimeoutError("abort: the send to rank 1 timed out instead of failing");
      throw CommError("abort: the send to rank 1 completed");
    }
    for (int i = 0; i < 100000; ++i) allreduce(comm.world(), o);
    verdict = "FAIL rank " + std::to_string(comm.rank()) + ": no error";
  } catch (const CommError& e) {
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bool ok = mode == "self-abort" ? std::strstr(e.what(), "self-abort check") && s < 0.5
              : mode == "abort"     ? dynamic_cast<const RemoteError*>(&e) && std::strstr(e.what(), "failure check abort") &&
                                        std::strstr(e.what(), "rank 1") && s < 0.9
              : mode == "partial" ? dynamic_cast<const NetworkError*>(&e) && std::strstr(e.what(), "rank 1") && s < 0.9
                                  : std::strstr(e.what(), "allreduce") && std::strstr(e.what(), "rank ") && s < 2.5;
    char buf[48];
    std::snprintf(buf, sizeof buf, " after %.2f s: ", s);
    const char* kind = dynamic_cast<const TimeoutError*>(&e)   ? "TimeoutError"
                       : dynamic_cast<const NetworkError*>(&e) ? "NetworkError"
                       : dynamic_cast<const RemoteError*>(&e)  ? "RemoteError"
                                                               : "CommError";
    verdict = std::string(ok ? "PASS" : "FAIL") + " rank " + std::to_string(comm.rank()) + " (" + mode +
              "): " + kind + buf + e.what();
  }
  std::printf("%s\n", verdict.c_str());
  std::fflush(stdout);
  // The communicator is broken; leave without waiting on the dead peer.
  _exit(verdict.rfind("PASS", 0) == 0 ? 0 : 1);
}
