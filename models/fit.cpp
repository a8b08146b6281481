#include "models/fit.hpp"

#include <algorithm>
#include <cmath>

namespace clab {
namespace {

template <typename F>
double rms(std::span<const speedup_point> pts, F model) {
  if (pts.empty()) return 0;
  double sse = 0;
  for (const speedup_point& p : pts) {
    const double e = p.speedup - model(p.workers);
    sse += e * e;
  }
  return std::sqrt(sse / static_cast<double>(pts.size()));
}

}  // namespace

double amdahl_speedup(double s, double p) { return 1.0 / (s + (1.0 - s) / p); }

double gustafson_speedup(double s, double p) { return p - s * (p - 1.0); }

amdahl_fit fit_amdahl(std::span<const speedup_point> points) {
  // One parameter on [0, 1]: a coarse grid, then golden-section refinement around the best cell.
  auto error = [&](double s) {
    return rms(points, [s](double p) { return amdahl_speedup(s, p); });
  };
  constexpr int k_grid = 200;
  double best = 0;
  for (int i = 1; i <= k_grid; ++i) {
    const double s = static_cast<double>(i) / k_grid;
    if (error(s) < error(best)) best = s;
  }
  double lo = std::max(0.0, best - 1.0 / k_grid);
  double hi = std::min(1.0, best + 1.0 / k_grid);
  const double g = (std::sqrt(5.0) - 1) / 2;
  for (int i = 0; i < 60; ++i) {
    const double a = hi - g * (hi - lo);
    const double b = lo + g * (hi - lo);
    if (error(a) < error(b)) {
      hi = b;
    } else {
      lo = a;
    }
  }
  amdahl_fit f;
  f.serial_fraction = (lo + hi) / 2;
  f.rms_error = error(f.serial_fraction);
  return f;
}

double usl_speedup(double sigma, double kappa, double p) {
  return p / (1.0 + sigma * (p - 1.0) + kappa * p * (p - 1.0));
}

usl_fit fit_usl(std::span<const speedup_point> points) {
  // Normal equations of y = σ·x1 + κ·x2 with x1 = P − 1, x2 = P(P − 1), y = P/S − 1.
  double s11 = 0, s12 = 0, s22 = 0, s1y = 0, s2y = 0;
  for (const speedup_point& pt : points) {
    if (pt.speedup <= 0) continue;
    const double x1 = pt.workers - 1.0;
    const double x2 = pt.workers * (pt.workers - 1.0);
    const double y = pt.workers / pt.speedup - 1.0;
    s11 += x1 * x1;
    s12 += x1 * x2;
    s22 += x2 * x2;
    s1y += x1 * y;
    s2y += x2 * y;
  }
  usl_fit f;
  const double det = s11 * s22 - s12 * s12;
  if (det > 1e-12 * std::max(1.0, s11 * s22)) {
    f.sigma = (s1y * s22 - s2y * s12) / det;
    f.kappa = (s2y * s11 - s1y * s12) / det;
  }
  // Negative terms mean the data do not support them: refit the other one alone.
  if (f.kappa < 0 || det <= 1e-12 * std::max(1.0, s11 * s22)) {
    f.kappa = 0;
    f.sigma = s11 > 0 ? s1y / s11 : 0;
  }
  if (f.sigma < 0) {
    f.sigma = 0;
    f.kappa = s22 > 0 ? std::max(0.0, s2y / s22) : 0;
  }
  f.rms_error = rms(points, [&](double p) { return usl_speedup(f.sigma, f.kappa, p); });
  f.peak_workers = f.kappa > 0 ? std::sqrt(std::max(0.0, 1.0 - f.sigma) / f.kappa) : 0;
  return f;
}

}  // namespace clab
