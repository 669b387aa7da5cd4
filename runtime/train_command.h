// `tessera train`: argument parsing and the run.
#pragma once

#include <string>
#include <vector>

namespace tessera {

// Returns the process exit code; prints usage errors to stderr (exit 2).
int train_command(const std::vector<std::string>& args);
extern const char* kTrainUsage;

}  // namespace tessera
