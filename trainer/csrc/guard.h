// The one place where C++ exceptions become error strings for Rust (see accel.h). Every
// `extern "C"` entry point runs its body through `shk::guard`; nothing else may catch.

#ifndef STACKHIVE_GUARD_H
#define STACKHIVE_GUARD_H

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

namespace shk {

inline char *error(const std::string &message) {
  // strdup allocates with malloc, so shk_free_error frees with free.
  return strdup(message.c_str());
}

// Runs `body`; returns NULL, or the error message of whatever it threw. c10 errors are reported
// without their C++ backtrace, which tells a user of the trainer nothing.
template <typename F> char *guard(F &&body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const c10::Error &e) {
    return error(e.what_without_backtrace());
  } catch (const std::exception &e) {
    return error(e.what());
  } catch (...) {
    return error("unknown c++ exception");
  }
}

} // namespace shk

#endif
