// Failure behaviour on the loopback transport: a rank that dies mid-collective, one that stops
// answering, one that aborts, and mismatched messages. Every other rank must fail with a
// CommError naming the operation and the peer, within the deadline, never hang.
#include "loopback_world.h"

#include <tessera/comms/collectives.h>

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace tessera::comms {
namespace {

using namespace std::chrono_literals;

struct Outcome {
  std::string what;
  std::string type;
  double seconds = 0;
};

// 1x4 mesh on 4 ranks; every rank but `victim` runs allreduces with a 1 s deadline until one
// fails; the victim runs `victim_fn`.
std::vector<Outcome> run_with_victim(int victim, const std::function<void(MeshComm&, loopback::Hub&)>& victim_fn) {
  Mesh mesh = Mesh::parse("1x4");
  auto hub = loopback::Hub::create(4);
  std::vector<Outcome> out(4);
  std::vector<std::thread> ts;
  for (int r = 0; r < 4; ++r) {
    ts.emplace_back([&, r] {
      MeshComm comm(mesh, hub->transport(r));
      if (r == victim) {
        victim_fn(comm, *hub);
        return;
      }
      std::vector<float> v(1 << 16, 1.0f);
      AllreduceOptions o;
      o.count = v.size();
      o.inputs = {v.data()};
      o.outputs = {v.data()};
      o.timeout = 1000ms;
      o.chunk_bytes = 4096;
      auto t0 = Clock::now();
      try {
        for (int i = 0; i < 1000; ++i) allreduce(comm.world(), o);
        out[r].what = "no error";
      } catch (const TimeoutError& e) {
        out[r] = {e.what(), "TimeoutError"};
      } catch (const NetworkError& e) {
        out[r] = {e.what(), "NetworkError"};
      } catch (const RemoteError& e) {
        out[r] = {e.what(), "RemoteError"};
      } catch (const std::exception& e) {
        out[r] = {e.what(), "other"};
      }
      out[r].seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      // The communicator refuses further work.
      try {
        allreduce(comm.world(), o);
        out[r].what += " [but a later call worked]";
      } catch (const CommError&) {
      }
    });
  }
  for (auto& t : ts) t.join();
  return out;
}

// Every other rank fails in time with a CommError naming the operation and a peer rank; a
// rank whose wait was on the victim itself names the victim. (A rank stuck behind another
// stuck rank names the one it waited for, and the abort notices it got.)
void expect_failed(const std::vector<Outcome>& out, int victim, double within_s) {
  std::string v = "rank " + std::to_string(victim);
  int naming_victim = 0;
  for (int r = 0; r < 4; ++r) {
    if (r == victim) continue;
    SCOPED_TRACE("rank " + std::to_string(r) + ": " + out[r].type + ": " + out[r].what);
    EXPECT_NE(out[r].type, "");
    EXPECT_NE(out[r].type, "other");
    EXPECT_NE(out[r].what.find("allreduce"), std::string::npos);
    // The peer is named either as the one a receive waited on or the one a send went to.
    EXPECT_TRUE(out[r].what.find("from rank ") != std::string::npos ||
                out[r].what.find("to rank ") != std::string::npos);
    EXPECT_LT(out[r].seconds, within_s);
    naming_victim += out[r].what.find(v) != std::string::npos;
  }
  EXPECT_GE(naming_victim, 1);
}

TEST(Failure, RankDiesMidCollective) {
  auto out = run_with_victim(2, [](MeshComm& comm, loopback::Hub& hub) {
    // Take part in a few collectives, then die while the next one is in flight.
    std::vector<float> v(1 << 16, 1.0f);
    AllreduceOptions o;
    o.count = v.size();
    o.inputs = {v.data()};
    o.outputs = {v.data()};
    o.timeout = 1000ms;
    o.chunk_bytes = 4096;
    for (int i = 0; i < 3; ++i) allreduce(comm.world(), o);
    std::thread killer([&] {
      std::this_thread::sleep_for(2ms);
      hub.kill(2);
    });
    try {
      allreduce(comm.world(), o);
    } catch (const CommError&) {
    }
    killer.join();
  });
  expect_failed(out, 2, 2.0);
  // Rank 3 receives from rank 2 in the ring: it learns of the death first hand.
  EXPECT_EQ(out[3].type, "NetworkError") << out[3].what;
  EXPECT_NE(out[3].what.find("rank 2 is gone"), std::string::npos) << out[3].what;
}

TEST(Failure, RankStopsResponding) {
  auto out = run_with_victim(2, [](MeshComm&, loopback::Hub&) { std::this_thread::sleep_for(3000ms); });
  expect_failed(out, 2, 2.4);
  bool timed_out = false;
  for (int r : {0, 1, 3}) timed_out |= out[r].type == "TimeoutError";
  EXPECT_TRUE(timed_out);
}

TEST(Failure, RankAborts) {
  auto out = run_with_victim(1, [](MeshComm& comm, loopback::Hub&) {
    std::this_thread::sleep_for(50ms);
    comm.transport().abort("stopped by the user");
  });
  expect_failed(out, 1, 2.0);
  EXPECT_NE(out[0].what.find("stopped by the user"), std::string::npos) << out[0].what;
}

TEST(Failure, MismatchedCountsAreRemoteErrors) {
  Mesh mesh = Mesh::parse("1x2");
  auto errors = testing::run_loopback(mesh, 2, [&](MeshComm& c) {
    std::vector<float> v(c.rank() == 0 ? 10 : 12, 1.0f);
    AllreduceOptions o;
    o.count = v.size();
    o.inputs = {v.data()};
    o.outputs = {v.data()};
    o.timeout = 2000ms;
    allreduce(c.world(), o);
  });
  for (auto& e : errors) {
    EXPECT_NE(e.find("size mismatch"), std::string::npos) << e;
  }
}

TEST(Failure, DeadlineOnASendNobodyReceives) {
  Mesh mesh = Mesh::parse("1x2");
  auto t0 = Clock::now();
  auto errors = testing::run_loopback(mesh, 2, [&](MeshComm& c) {
    if (c.rank() == 1) {
      std::this_thread::sleep_for(600ms);
      return;
    }
    float x[4] = {};
    SendRecvOptions o;
    o.from = 0;
    o.to = 1;
    o.buffer = x;
    o.count = 4;
    o.timeout = 300ms;
    send(c, o);
  });
  EXPECT_NE(errors[0].find("timed out after 300 ms"), std::string::npos) << errors[0];
  EXPECT_NE(errors[0].find("rank 1"), std::string::npos) << errors[0];
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - t0).count(), 2.0);
}

}  // namespace
}  // namespace tessera::comms
