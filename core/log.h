// Logging: one spdlog logger per component ("core", "kernels", "comms", "runtime", ...).
//
//   tessera::log::get("kernels")->debug("gemm: chose {}", name);
//
// The level comes from TESSERA_LOG_LEVEL (trace, debug, info, warn, error, critical, off;
// default warn), read when a logger is first created. TESSERA_VERBOSE=1 is shorthand for
// debug. Loggers write to stderr and are thread-safe.
#pragma once

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>

namespace tessera::log {

inline spdlog::level::level_enum level_from_env() {
  if (const char* v = std::getenv("TESSERA_LOG_LEVEL"); v && *v) {
    auto lvl = spdlog::level::from_str(v);
    // from_str maps unknown names to "off"; only accept "off" when it was asked for.
    if (lvl != spdlog::level::off || std::string(v) == "off") return lvl;
  }
  if (const char* v = std::getenv("TESSERA_VERBOSE"); v && *v && std::string(v) != "0") {
    return spdlog::level::debug;
  }
  return spdlog::level::warn;
}

inline std::shared_ptr<spdlog::logger> get(const std::string& component) {
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_color_mt(component);
  logger->set_level(level_from_env());
  logger->set_pattern("[tessera:%n] %^%l%$: %v");
  return logger;
}

}  // namespace tessera::log
