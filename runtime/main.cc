// The `tessera` command.
#include <tessera/core/error.h>
#include <tessera/runtime/info.h>
#include <tessera/runtime/launch_command.h>
#include <tessera/runtime/train_command.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

namespace {

constexpr const char* kUsage =
    "usage: tessera <command> [options]\n"
    "\n"
    "commands:\n"
    "  info        version, CPU ISA ladder and the rung in use, dtypes, communication backends\n"
    "  train       train a built-in model on Fashion-MNIST (tessera train --help)\n"
    "  launch      tessera launch -n N [--bind core|none] -- train --mesh 2x2 --transport grpc: N local processes\n"
    "  version     print the version\n"
    "  help        this text\n"
    "\n"
    "environment: TESSERA_MAX_ISA=scalar|avx2|avx512|avx512_bf16 caps the kernels' ISA;\n"
    "             TESSERA_LOG_LEVEL=trace|debug|info|warn|error|off (TESSERA_VERBOSE=1 = debug)\n";

int run(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "help" || cmd == "--help" || cmd == "-h") {
    std::cout << kUsage;
    return 0;
  }
  if (cmd == "version" || cmd == "--version") {
    std::cout << "tessera " << tessera::version() << "\n";
    return 0;
  }
  if (cmd == "info") {
    if (argc > 2) {
      std::cerr << "tessera info: unexpected argument '" << argv[2] << "'\n";
      return 2;
    }
    std::cout << tessera::info_report();
    return 0;
  }
  if (cmd == "launch") return tessera::launch_command(std::vector<std::string>(argv + 2, argv + argc));
  if (cmd == "train") return tessera::train_command(std::vector<std::string>(argv + 2, argv + argc));
  std::cerr << "tessera: unknown command '" << cmd << "'\n\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const tessera::Error& e) {
    std::cerr << "tessera: error: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "tessera: unexpected error: " << e.what() << "\n";
    return 1;
  }
}
