// The two statistics every measurement here reports: the median (robust to a stray slow run) and
// the coefficient of variation, the sample standard deviation over the mean.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace clab {

/// The middle value (the upper of the two middles for an even count); 0 for no values.
[[nodiscard]] std::int64_t median(std::vector<std::int64_t> values);
[[nodiscard]] double median(std::vector<double> values);

/// Sample standard deviation / mean; 0 for fewer than two values or a mean of 0.
[[nodiscard]] double coefficient_of_variation(std::span<const std::int64_t> values);
[[nodiscard]] double coefficient_of_variation(std::span<const double> values);

}  // namespace clab
