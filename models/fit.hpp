// Fits of measured speedups to the classic scaling laws, so a report can say not only "how fast"
// but "why it stops": Amdahl's serial fraction, and the Universal Scalability Law's contention
// and coherency terms.
#pragma once

#include <span>

namespace clab {

struct speedup_point {
  double workers = 1;  ///< P
  double speedup = 1;  ///< T(1) / T(P)
};

/// Amdahl: S(P) = 1 / (s + (1 − s) / P). The serial fraction s ∈ [0, 1] minimising the squared
/// error over the points (at least one point with P > 1, else s = 0).
struct amdahl_fit {
  double serial_fraction = 0;
  double rms_error = 0;  ///< root-mean-square of S_measured − S_fitted
};
[[nodiscard]] amdahl_fit fit_amdahl(std::span<const speedup_point> points);
[[nodiscard]] double amdahl_speedup(double serial_fraction, double p);

/// Gustafson: scaled speedup S(P) = P − s · (P − 1) for a problem that grows with P.
[[nodiscard]] double gustafson_speedup(double serial_fraction, double p);

/// Universal Scalability Law (Gunther): S(P) = P / (1 + σ (P − 1) + κ P (P − 1)), with σ the
/// contention (queueing on a shared resource) and κ the coherency (crosstalk) cost, both ≥ 0.
/// Linear least squares on P/S − 1 = σ (P − 1) + κ P (P − 1), clamped to σ, κ ≥ 0.
struct usl_fit {
  double sigma = 0;
  double kappa = 0;
  double rms_error = 0;
  double peak_workers = 0;  ///< P at which S peaks, √((1 − σ)/κ); 0 when κ = 0 (no peak)
};
[[nodiscard]] usl_fit fit_usl(std::span<const speedup_point> points);
[[nodiscard]] double usl_speedup(double sigma, double kappa, double p);

}  // namespace clab
