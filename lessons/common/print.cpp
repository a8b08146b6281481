#include "lessons/common/print.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <string_view>
#include <vector>

namespace clab {

std::string format_ns(std::int64_t ns) {
  struct unit {
    double size;
    const char* name;
  };
  constexpr unit k_units[] = {{1, "ns"}, {1e3, "µs"}, {1e6, "ms"}, {1e9, "s"}};
  const double x = static_cast<double>(ns);
  std::size_t u = 0;
  while (u + 1 < std::size(k_units) && std::fabs(x) >= k_units[u + 1].size) ++u;
  char buf[48];
  for (;; ++u) {  // 999.6 µs prints as 1.00 ms, not 1000 µs
    const double v = x / k_units[u].size;
    const double av = std::fabs(v);
    const int decimals = (u == 0 || av >= 99.95) ? 0 : av >= 9.995 ? 1 : 2;
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    if (u + 1 == std::size(k_units) || std::fabs(std::atof(buf)) < 1000) break;
  }
  return std::string(buf) + " " + k_units[u].name;
}

std::string pad(const std::string& s, std::size_t width) {
  std::size_t shown = 0;  // code points, not bytes: "µ" is two bytes and one column
  for (unsigned char c : s) shown += (c & 0xC0U) != 0x80U ? 1 : 0;
  return shown >= width ? s : s + std::string(width - shown, ' ');
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
