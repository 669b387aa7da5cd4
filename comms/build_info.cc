#include <tessera/comms/build_info.h>

#include <google/protobuf/stubs/common.h>

#if defined(TESSERA_WITH_MPI)
#include <mpi.h>
#endif
#if defined(TESSERA_WITH_GRPC)
#include <grpcpp/grpcpp.h>
#endif

namespace tessera::comms {

std::vector<BackendInfo> backends() {
  std::vector<BackendInfo> out;
  out.push_back({"loopback", true, true, "in-process threads; needs no library"});
#if defined(TESSERA_WITH_MPI)
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int len = 0;
  MPI_Get_library_version(version, &len);  // allowed before MPI_Init
  std::string v(version, static_cast<size_t>(len));
  if (auto nl = v.find_first_of(",\n"); nl != std::string::npos) v.resize(nl);
  out.push_back({"mpi", true, true, v});
#else
  out.push_back({"mpi", false, false, "not built (configure with -DTESSERA_WITH_MPI=ON)"});
#endif
#if defined(TESSERA_WITH_GRPC)
  out.push_back({"grpc", true, true,
                 "gRPC " + grpc::Version() + ", protobuf " +
                     google::protobuf::internal::VersionString(GOOGLE_PROTOBUF_VERSION)});
#else
  out.push_back({"grpc", false, false, "not built (configure with -DTESSERA_WITH_GRPC=ON)"});
#endif
  return out;
}

}  // namespace tessera::comms
