// The helper program of lesson 02's spawn executor: a fresh process image that receives one task
// message on stdin, runs the task, writes its report to stdout and exits. Look for: after exec,
// nothing of the parent is left but the descriptors it handed over and the environment.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <span>

#include "workloads/process_io.hpp"

int main() {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // die with the parent
  rlimit core{};
  if (getrlimit(RLIMIT_CORE, &core) == 0) {
    core.rlim_cur = 0;  // an injected crash leaves no core file
    setrlimit(RLIMIT_CORE, &core);
  }
  clab::task_message m;
  if (clab::read_all(0, std::as_writable_bytes(std::span(&m, 1))) != sizeof m) return 3;
  if (getppid() != m.parent) return 4;  // the parent died before prctl took effect
  const clab::task_report r = clab::run_to_report(m.work, clab::from_ns(m.origin_ns), m.worker);
  return clab::write_all(1, std::as_bytes(std::span(&r, 1))) ? 0 : 5;
}
