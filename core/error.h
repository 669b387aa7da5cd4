// Errors. Library code throws, never aborts.
//
//   TESSERA_CHECK(bias >= 0 && bias <= 63, "cfp8 bias ", bias, " out of range 0..63");
//   TESSERA_CHECK_TYPE(t.dtype() == DType::f32, "expected f32, got ", dtype_name(t.dtype()));
//   TESSERA_INTERNAL_ASSERT(n == expected, "packed ", n, " of ", expected);
//
// The message is built only on failure and carries file:line. The hierarchy maps one-to-one
// onto Python exceptions (python/bindings.cc): what the user did wrong (ValueError, TypeError,
// IndexError) is distinguishable from what tessera got wrong (InternalError).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tessera {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};
// Bad argument value: a shape, a bias, a name, a configuration.
class ValueError : public Error { using Error::Error; };
// Right value, wrong kind: a dtype the operation does not take.
class TypeError : public Error { using Error::Error; };
// An index or coordinate out of range.
class IndexError : public Error { using Error::Error; };
// Valid request that tessera does not (yet, or on this CPU) support.
class NotImplementedError : public Error { using Error::Error; };
// An allocation failed; the message says how many bytes were asked for.
class OutOfMemoryError : public Error { using Error::Error; };
// An input file or stream is missing, truncated or corrupted.
class IoError : public Error { using Error::Error; };
// A broken invariant inside tessera: a bug, please report it.
class InternalError : public Error { using Error::Error; };

// Communication failures. After any of these a transport is in an unknown state and must be
// rebuilt before further use.
class CommError : public Error { using Error::Error; };
// A deadline passed before the peer answered.
class TimeoutError : public CommError { using CommError::CommError; };
// The connection to a peer failed (refused, reset, process gone).
class NetworkError : public CommError { using CommError::CommError; };
// A peer reported an error of its own, or sent a malformed message.
class RemoteError : public CommError { using CommError::CommError; };

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
template <typename E, typename... Args>
[[noreturn]] void throw_at(const char* file, int line, Args&&... args) {
  throw E(concat(std::forward<Args>(args)..., " [", file, ":", line, "]"));
}
}  // namespace detail
}  // namespace tessera

#define TESSERA_THROW(ExcType, ...) \
  ::tessera::detail::throw_at<::tessera::ExcType>(__FILE__, __LINE__, __VA_ARGS__)

#define TESSERA_CHECK_AS(ExcType, cond, ...)  \
  do {                                        \
    if (__builtin_expect(!(cond), 0)) {       \
      TESSERA_THROW(ExcType, __VA_ARGS__);    \
    }                                         \
  } while (0)

#define TESSERA_CHECK(cond, ...) TESSERA_CHECK_AS(ValueError, cond, __VA_ARGS__)
#define TESSERA_CHECK_TYPE(cond, ...) TESSERA_CHECK_AS(TypeError, cond, __VA_ARGS__)
#define TESSERA_CHECK_INDEX(cond, ...) TESSERA_CHECK_AS(IndexError, cond, __VA_ARGS__)
#define TESSERA_INTERNAL_ASSERT(cond, ...) \
  TESSERA_CHECK_AS(InternalError, cond, "internal assertion '" #cond "' failed: ", __VA_ARGS__)
