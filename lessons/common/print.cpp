#include "lessons/common/print.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>
#include <vector>

namespace clab {

std::string format_ns(std::int64_t ns) {
  const double x = static_cast<double>(ns);
  const double ax = std::fabs(x);
  const char* unit = "ns";
  double v = x;
  if (ax >= 1e9) {
    v = x / 1e9, unit = "s";
  } else if (ax >= 1e6) {
    v = x / 1e6, unit = "ms";
  } else if (ax >= 1e3) {
    v = x / 1e3, unit = "µs";
  }
  const double av = std::fabs(v);
  const int decimals = (unit == std::string_view("ns") || av >= 100) ? 0 : av >= 10 ? 1 : 2;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f %s", decimals, v, unit);
  return buf;
}

std::string gantt(std::span<const task> tasks, std::span<const task_record> records,
                  std::int64_t span_ns, int workers, int width) {
  constexpr std::string_view k_digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  constexpr int k_max_rows = 32;
  const int rows = std::min(workers, k_max_rows);
  std::vector<std::string> line(static_cast<std::size_t>(rows), std::string(width, ' '));
  const double scale = span_ns > 0 ? width / static_cast<double>(span_ns) : 0;
  auto column = [&](std::int64_t t) {
    return std::clamp(static_cast<int>(std::lround(static_cast<double>(t) * scale)), 0, width);
  };
  for (const task_record& r : records) {
    if (r.worker < 0 || r.worker >= rows || r.id >= tasks.size()) continue;
    std::string& row = line[static_cast<std::size_t>(r.worker)];
    const int a = column(r.start_ns);
    const int w = column(r.start_ns + tasks[r.id].wait_ns);
    const int b = std::max(column(r.end_ns), a + 1);  // every task gets at least one cell
    for (int c = a; c < std::min(b, width); ++c) row[c] = c < w ? '.' : k_digits[r.id % 36];
    if (a < width) row[a] = k_digits[r.id % 36];  // the first cell names the task
  }
  std::string out;
  char label[16];
  for (int k = 0; k < rows; ++k) {
    std::snprintf(label, sizeof label, "  w%-3d|", k);
    out += label + line[static_cast<std::size_t>(k)] + "|\n";
  }
  if (workers > rows) out += "  ... " + std::to_string(workers - rows) + " more workers\n";
  return out;
}

}  // namespace clab
