// `lesson 8 --demo files`: why an event loop cannot wait for a disk. epoll reports readiness, and
// a regular file is always ready: the kernel refuses to watch one (EPERM), and a read() of it
// "never blocks" in epoll's sense, yet it may sleep on the disk for milliseconds, with the whole
// loop stopped behind it. So the libraries that give you "async files" do one of two things: hand
// each read to a thread pool (libuv's fs_* calls, Python's aiofiles, Node's fs.promises: the
// blocking read() still happens, on a thread that may block), or ask the kernel for completions
// rather than readiness (io_uring: "read these bytes into this buffer, tell me when it is done").
//
// Look for: the refusal (epoll_ctl on a regular file), then the same K files read three ways, each
// checked against the checksum of what was written and timed (the median of a few runs): blocking
// read() one file after another, a pool of threads that each read() a file at a time, and
// io_uring with every read in flight at once. The files were just written, so they sit in the
// page cache: this times the system calls and the copies, not a disk.
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "lessons/08_async_io/executors.hpp"
#include "workloads/task.hpp"

#ifdef CLAB_HAVE_LIBURING
#include <liburing.h>
#endif

namespace clab {
namespace {

constexpr int k_files = 64;
constexpr std::size_t k_file_bytes = 256 * 1024;
constexpr int k_reps = 5;
constexpr int k_pool_threads = 4;  // libuv's default pool size

/// The temporary folder and its files, removed by the destructor: on success, on an error, and
/// on an exception out of the demo.
class temp_dir {
 public:
  temp_dir() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/clab-files-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw std::runtime_error("cannot make a temporary folder " + pattern + ": " +
                               std::strerror(errno));
    }
    path_ = pattern;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  [[nodiscard]] std::string file(int k) const { return path_ + "/file-" + std::to_string(k); }

 private:
  std::string path_;
};

/// File k's content: pseudo-random bytes from its seed.
std::vector<char> content_of(int k) {
  std::vector<char> bytes(k_file_bytes);
  std::uint64_t state = 0x5eed0000ULL + static_cast<std::uint64_t>(k);
  for (std::size_t i = 0; i < bytes.size(); i += 8) {
    const std::uint64_t word = splitmix64(state++);
    std::memcpy(bytes.data() + i, &word, std::min<std::size_t>(8, bytes.size() - i));
  }
  return bytes;
}

/// One file's bytes folded (FNV-1a, 8 bytes at a time), then mixed with its index, so that the
/// sum over files says both "every byte" and "every file" whatever order they were read in.
std::uint64_t file_checksum(int k, const char* data, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    std::uint64_t w = 0;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * 0x100000001b3ULL;
  }
  return splitmix64(h ^ static_cast<std::uint64_t>(k));
}

std::string errno_text(int err) {
  return std::string(strerrorname_np(err) != nullptr ? strerrorname_np(err) : "?") + " (" +
         std::strerror(err) + ")";
}

int open_or_throw(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  return fd;
}

/// Reads the whole of fd into buf with blocking read() calls.
void read_all(int fd, char* buf, std::size_t n, const std::string& path) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) throw std::runtime_error("cannot read " + path + ": short or failed read");
    got += static_cast<std::size_t>(r);
  }
}

/// The files being read: the folder, and a buffer per file that a row reads into.
struct files {
  const temp_dir& dir;
  std::vector<std::vector<char>> buffers;
};

/// The sum of the files' checksums, from the buffers (what a row returns).
std::uint64_t fold(files& f) {
  std::uint64_t sum = 0;
  for (int k = 0; k < k_files; ++k) {
    sum += file_checksum(k, f.buffers[static_cast<std::size_t>(k)].data(), k_file_bytes);
  }
  return sum;
}

void read_file(files& f, int k) {
  const std::string path = f.dir.file(k);
  const int fd = open_or_throw(path, O_RDONLY);
  try {
    read_all(fd, f.buffers[static_cast<std::size_t>(k)].data(), k_file_bytes, path);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

// [snippet:files-serial]
/// What a loop would do if it read a file where it stands: one blocking read() after another.
std::uint64_t read_serial(files& f) {
  for (int k = 0; k < k_files; ++k) read_file(f, k);
  return fold(f);
}
// [end-snippet]

// [snippet:files-pool]
/// What libuv and aiofiles do: the same blocking read(), on a pool thread; the loop only waits
/// for the pool to say "done" (here the caller joins the pool).
std::uint64_t read_pool(files& f) {
  std::atomic<int> next{0};
  std::vector<std::exception_ptr> errors(k_pool_threads);
  {
    std::vector<std::jthread> pool;
    for (int w = 0; w < k_pool_threads; ++w) {
      pool.emplace_back([&, w] {
        try {
          for (int k = next.fetch_add(1); k < k_files; k = next.fetch_add(1)) read_file(f, k);
        } catch (...) {
          errors[static_cast<std::size_t>(w)] = std::current_exception();
        }
      });
    }
  }
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  return fold(f);
}
// [end-snippet]

#ifdef CLAB_HAVE_LIBURING
/// io_uring's ring, released by the destructor.
struct ring {
  io_uring r{};
  bool up = false;
  ~ring() {
    if (up) io_uring_queue_exit(&r);
  }
};

/// Why the kernel refuses a ring here, or nothing when it gives one.
std::optional<std::string> uring_refusal() {
  ring probe;
  const int rc = io_uring_queue_init(8, &probe.r, 0);
  if (rc == 0) {
    probe.up = true;
    return std::nullopt;
  }
  return "io_uring_queue_init: " + errno_text(-rc) +
         (-rc == EPERM || -rc == ENOSYS
              ? ": a seccomp filter (containers) or kernel.io_uring_disabled forbids it"
              : "");
}

// [snippet:files-uring]
/// Completions, not readiness: one submission queue entry per file ("read 256 KiB at offset 0
/// into this buffer"), all handed to the kernel with one system call, then the completions reaped
/// as they come (a short read is asked for again from where it stopped).
std::uint64_t read_uring(files& f) {
  ring q;
  if (const int rc = io_uring_queue_init(k_files, &q.r, 0); rc < 0) {
    throw std::runtime_error("io_uring_queue_init: " + errno_text(-rc));
  }
  q.up = true;
  std::vector<int> fds(k_files, -1);
  std::vector<std::size_t> done(k_files, 0);
  const auto close_all = [&] {
    for (int& fd : fds) {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  };
  const auto submit_read = [&](int k) {
    io_uring_sqe* sqe = io_uring_get_sqe(&q.r);  // never null: at most k_files in flight
    const auto i = static_cast<std::size_t>(k);
    io_uring_prep_read(sqe, fds[i], f.buffers[i].data() + done[i],
                       static_cast<unsigned>(k_file_bytes - done[i]), done[i]);
    io_uring_sqe_set_data64(sqe, i);
  };
  try {
    for (int k = 0; k < k_files; ++k) {
      fds[static_cast<std::size_t>(k)] = open_or_throw(f.dir.file(k), O_RDONLY);
      submit_read(k);
    }
    int pending = k_files;
    if (const int rc = io_uring_submit(&q.r); rc < 0) {
      throw std::runtime_error("io_uring_submit: " + errno_text(-rc));
    }
    while (pending > 0) {
      io_uring_cqe* cqe = nullptr;
      if (const int rc = io_uring_wait_cqe(&q.r, &cqe); rc < 0) {
        if (rc == -EINTR) continue;
        throw std::runtime_error("io_uring_wait_cqe: " + errno_text(-rc));
      }
      const auto i = static_cast<std::size_t>(io_uring_cqe_get_data64(cqe));
      const int res = cqe->res;
      io_uring_cqe_seen(&q.r, cqe);
      if (res <= 0) {
        throw std::runtime_error("io_uring read of " + f.dir.file(static_cast<int>(i)) + ": " +
                                 (res == 0 ? std::string("end of file") : errno_text(-res)));
      }
      done[i] += static_cast<std::size_t>(res);
      if (done[i] < k_file_bytes) {  // short read: ask for the rest
        submit_read(static_cast<int>(i));
        io_uring_submit(&q.r);
      } else {
        --pending;
      }
    }
  } catch (...) {
    close_all();  // the ring is torn down (and every read in it with it) by q's destructor
    throw;
  }
  close_all();
  return fold(f);
}
// [end-snippet]
#endif

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Runs `read` k_reps times on fresh (zeroed) buffers; prints its row. False on a mismatch.
bool row(const char* name, const temp_dir& dir, std::uint64_t expected,
         std::uint64_t (*read)(files&)) {
  std::vector<std::int64_t> times;
  std::uint64_t got = 0;
  for (int rep = 0; rep < k_reps; ++rep) {
    files f{dir, std::vector<std::vector<char>>(k_files, std::vector<char>(k_file_bytes, 0))};
    const std::int64_t begin = now_ns();
    got = read(f);
    times.push_back(now_ns() - begin);
    if (got != expected) break;
  }
  std::sort(times.begin(), times.end());
  const double median_ms = static_cast<double>(times[times.size() / 2]) / 1e6;
  std::printf("  %-34s %8.2f ms  checksum %016llx  %s\n", name, median_ms,
              static_cast<unsigned long long>(got), got == expected ? "verified" : "MISMATCH");
  return got == expected;
}

int run_demo() {
  const temp_dir dir;
  std::uint64_t expected = 0;
  for (int k = 0; k < k_files; ++k) {
    const std::vector<char> bytes = content_of(k);
    const std::string path = dir.file(k);
    const int fd = open_or_throw(path, O_WRONLY | O_CREAT | O_TRUNC);
    std::size_t put = 0;
    while (put < bytes.size()) {
      const ssize_t n = ::write(fd, bytes.data() + put, bytes.size() - put);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = errno;
        ::close(fd);
        throw std::runtime_error("cannot write " + path + ": " + std::strerror(err));
      }
      put += static_cast<std::size_t>(n);
    }
    ::close(fd);
    expected += file_checksum(k, bytes.data(), bytes.size());
  }
  std::printf(
      "lesson 08 --demo files: %d files of %zu KiB (%.1f MiB) in a temporary folder, in "
      "the page cache\n",
      k_files, k_file_bytes / 1024,
      static_cast<double>(k_files) * static_cast<double>(k_file_bytes) / (1024.0 * 1024.0));

  // [snippet:files-epoll]
  // Readiness cannot wait for a file: epoll refuses to watch one.
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  const int fd = open_or_throw(dir.file(0), O_RDONLY);
  epoll_event ev{};
  ev.events = EPOLLIN;
  const int rc = ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  const int err = errno;
  // [end-snippet]
  ::close(fd);
  ::close(ep);
  if (rc == 0) {
    std::printf("epoll_ctl(EPOLL_CTL_ADD) on a regular file: accepted (unexpected)\n");
  } else {
    std::printf(
        "epoll_ctl(EPOLL_CTL_ADD) on a regular file: -1, errno %s: a file is always "
        "\"ready\", so readiness says nothing about a read that waits for the disk\n",
        errno_text(err).c_str());
  }

  std::printf("reading every file, median of %d runs:\n", k_reps);
  bool ok = row("blocking read(), one after another", dir, expected, read_serial);
  ok = row("thread pool (4 threads), read()", dir, expected, read_pool) && ok;
#ifdef CLAB_HAVE_LIBURING
  if (const auto refused = uring_refusal()) {
    std::printf("  %-34s not run: %s\n", "io_uring (liburing), all in flight", refused->c_str());
  } else {
    ok = row("io_uring (liburing), all in flight", dir, expected, read_uring) && ok;
  }
#else
  std::printf("  %-34s not built: liburing-dev missing\n", "io_uring (liburing), all in flight");
#endif
  return ok ? 0 : 1;
}

}  // namespace

int files_demo() {
  try {
    return run_demo();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lesson 08 --demo files: %s\n", e.what());
    return 1;
  }
}

}  // namespace clab
