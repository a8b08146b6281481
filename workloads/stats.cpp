#include "workloads/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace clab {
namespace {

template <typename T>
T median_of(std::vector<T> v) {
  if (v.empty()) return T{};
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename T>
double cv_of(std::span<const T> values) {
  if (values.size() < 2) return 0;
  const auto n = static_cast<double>(values.size());
  double mean = 0;
  for (T x : values) mean += static_cast<double>(x);
  mean /= n;
  double var = 0;
  for (T x : values) var += (static_cast<double>(x) - mean) * (static_cast<double>(x) - mean);
  return mean > 0 ? std::sqrt(var / (n - 1)) / mean : 0;
}

}  // namespace

std::int64_t median(std::vector<std::int64_t> values) { return median_of(std::move(values)); }
double median(std::vector<double> values) { return median_of(std::move(values)); }
double coefficient_of_variation(std::span<const std::int64_t> values) { return cv_of(values); }
double coefficient_of_variation(std::span<const double> values) { return cv_of(values); }

}  // namespace clab
