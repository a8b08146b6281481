// ThreadSanitizer's suppressions, compiled into every program of the tsan preset (the root
// CMakeLists.txt links this object into each target), so that a lesson program a test starts, the
// sweep and the tests all read the same list with no TSAN_OPTIONS to pass along.
// Each entry is a library that is not built with ThreadSanitizer, whose synchronisation TSan
// therefore cannot see; our own code has no suppression.

extern "C" const char* __tsan_default_suppressions();

extern "C" const char* __tsan_default_suppressions() {
  return
      // Debian's oneTBB (libtbb.so): a task handed from the thread that runs task_group::run to
      // the worker that executes it is synchronised inside the library, so every such hand-off
      // is reported as a race.
      "race:libtbb.so\n"
      "race:tbb::detail\n"
      // Debian's libstdc++.so: exception_ptr and std::runtime_error's message are
      // reference-counted with atomics inside it. An exception handed from a pool thread to the
      // caller through a std::future (lesson 03's naive pool) is freed by whichever side lets go
      // last, and that release is reported as a race.
      "race:std::__exception_ptr::exception_ptr::_M_release\n"
      "race:std::runtime_error::~runtime_error\n";
}
