// Lesson 06's fibers on sockets: `fibers` and `fibers-mn` run io tasks (each request parked on its
// socket, see fiber_executors.cpp's request()) verified against serial's checksums, overlap 200
// requests on one thread, fail the requests in flight when the service is killed, give up a
// request at --task-timeout-ms, and close every parked request at a stop. The checks themselves
// are shared with the other executors that run io (support/io_runs.hpp).
#include <catch2/catch.hpp>
#include <string>

#include "lessons/06_fibers/executors.hpp"
#include "support/io_runs.hpp"

using namespace clab;

namespace {
const std::string k_service = IO_SERVICE;
}  // namespace

TEST_CASE("fibers and fibers-mn run io tasks verified against serial's checksums",
          "[06][fiber][io]") {
  CHECK(runs_io(fibers_executor()));
  CHECK(runs_io(fibers_mn_executor()));
  testing::check_io_run_verified(fibers_executor(), 1, k_service);
  for (int p : {1, 2, 3}) {
    CAPTURE(p);
    testing::check_io_run_verified(fibers_mn_executor(), p, k_service);
  }
}

TEST_CASE("fibers overlap 200 io waits of 20 ms on one thread, fibers-mn on two",
          "[06][fiber][io]") {
  const double one = testing::check_io_waits_overlap(fibers_executor(), 1, k_service);
  const double two = testing::check_io_waits_overlap(fibers_mn_executor(), 2, k_service);
  WARN("makespan / sum of waits: fibers " << one << ", fibers-mn (P = 2) " << two);
}

TEST_CASE("fibers: killing the service mid-run fails the requests in flight, one line each",
          "[06][fiber][io][fault]") {
  testing::check_service_killed_mid_run(fibers_executor(), 1, k_service);
  testing::check_service_killed_mid_run(fibers_mn_executor(), 2, k_service);
}

TEST_CASE("fibers: a request unanswered at --task-timeout-ms is given up with the timeout cause",
          "[06][fiber][io][timeout]") {
  testing::check_request_timeout(fibers_executor(), 1);
  testing::check_request_timeout(fibers_mn_executor(), 2);
}

TEST_CASE("fibers: a stop wakes and closes every parked request", "[06][fiber][io][stop]") {
  testing::check_stop_closes_parked_requests(fibers_executor(), 1, k_service);
  testing::check_stop_closes_parked_requests(fibers_mn_executor(), 2, k_service);
}
