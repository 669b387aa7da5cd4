// The coordinator's rendezvous for a world too large for gRPC's default message sizes: rank 0
// is a real GrpcTransport; the other ranks are clients that speak the Coordinator protocol
// (Hello, then Routes) from threads of this process and open no streams.
#include <tessera/comms/grpc/transport.h>
#include <tessera/core/error.h>
#include <tessera/proto/interconnect.grpc.pb.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace tessera::comms::grpc {
namespace {

namespace gr = ::grpc;

TEST(GrpcRendezvous, FiveHundredRanksGetTheirAddressesAndRoutes) {
  const int n = 500;  // Hello and (before protocol 3) Routes replies above gRPC's 64 KiB default here
  const std::string coordinator = "127.0.0.1:" + std::to_string(pick_free_port());
  std::string rank0_error;
  std::thread rank0([&] {
    try {
      GrpcOptions o;
      o.rank = 0;
      o.world_size = n;
      o.coordinator = coordinator;
      o.unix_local = false;
      o.cma_local = false;
      GrpcTransport t(o);  // its streams to the made-up addresses fail: it is never used
    } catch (const std::exception& e) {
      rank0_error = e.what();
    }
  });
  std::vector<std::string> errors(n);
  std::vector<int> addresses(n, 0), routes(n, 0);
  std::vector<std::thread> ranks;
  for (int r = 1; r < n; ++r) {
    ranks.emplace_back([&, r] {
      auto stub = proto::Coordinator::NewStub(gr::CreateChannel(coordinator, gr::InsecureChannelCredentials()));
      proto::HelloRequest hello;
      hello.set_rank(static_cast<uint32_t>(r));
      hello.set_world_size(n);
      hello.set_address("127.0.0.1:" + std::to_string(1 + r % 1000));  // nothing listens there
      hello.set_protocol_version(kProtocolVersion);
      proto::HelloReply reply;
      gr::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      ctx.set_wait_for_ready(true);
      gr::Status st = stub->Hello(&ctx, hello, &reply);
      if (!st.ok()) {
        errors[r] = "hello: " + st.error_message();
        return;
      }
      addresses[r] = reply.addresses_size();
      proto::RoutesRequest req;
      req.set_rank(static_cast<uint32_t>(r));
      for (int p = 0; p < n; ++p) req.add_reads(false);
      proto::RoutesReply rr;
      gr::ClientContext rctx;
      rctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      st = stub->Routes(&rctx, req, &rr);
      if (!st.ok()) {
        errors[r] = "routes: " + st.error_message();
        return;
      }
      routes[r] = rr.read_by_size();
      if (rr.every_pair()) errors[r] = "routes: every_pair set, but no rank read any probe";
    });
  }
  for (auto& t : ranks) t.join();
  rank0.join();
  EXPECT_EQ(rank0_error, "");
  for (int r = 1; r < n; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(addresses[r], n) << "rank " << r;
    EXPECT_EQ(routes[r], n) << "rank " << r;
    if (!errors[r].empty()) break;
  }
}

TEST(GrpcRendezvous, WorldSizeOutOfRange) {
  GrpcOptions o;
  o.world_size = kMaxWorld + 1;
  EXPECT_THROW(GrpcTransport{o}, ValueError);
  o.world_size = 0;
  EXPECT_THROW(GrpcTransport{o}, ValueError);
}

}  // namespace
}  // namespace tessera::comms::grpc
