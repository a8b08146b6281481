// Dependencies between tasks: a task graph in which task i may start only after each of its
// predecessors has ended. Look for: the ids are a topological order (every predecessor of task i
// has a smaller id), so running the tasks in id order satisfies every edge, and the longest path
// (the span S) is one pass over the ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "workloads/task.hpp"

namespace clab {

/// The shapes of --deps:
///   none   independent tasks (no edge; every lesson's default);
///   chain  task i depends on i-1: nothing may overlap, T ≥ Σ t_i;
///   tree   a binary out-tree: task i depends on (i-1)/2, span ≈ log2(N) tasks;
///   dag    seeded random: task i > 0 depends on 1 to 3 distinct tasks among the 8 before it.
enum class deps_shape : std::uint8_t { none, chain, tree, dag };

[[nodiscard]] std::string_view to_string(deps_shape s);
[[nodiscard]] std::optional<deps_shape> parse_deps_shape(std::string_view name);

/// The predecessors of every task, as compressed rows: the predecessors of task i are
/// pred[first[i]] to pred[first[i + 1] - 1], in increasing order.
struct task_graph {
  deps_shape shape = deps_shape::none;
  std::vector<std::uint32_t> first{0};  ///< n + 1 offsets into pred
  std::vector<std::uint32_t> pred;

  [[nodiscard]] std::size_t size() const { return first.size() - 1; }
  [[nodiscard]] std::size_t edges() const { return pred.size(); }
  [[nodiscard]] std::span<const std::uint32_t> preds(std::size_t i) const {
    return std::span<const std::uint32_t>(pred).subspan(first[i], first[i + 1] - first[i]);
  }
};

/// The window the dag shape draws predecessors from: the 8 ids before a task. A narrow window
/// keeps the graph deep but not a chain (the span stays a fraction of Σ t_i); a wide one would
/// make most tasks depend on the first few.
inline constexpr std::uint32_t k_dag_window = 8;

/// The graph of `shape` on n tasks. dag draws from splitmix64 of `seed` (the task set's --seed,
/// salted), so the same seed gives the same graph on every machine. none gives no edge.
[[nodiscard]] task_graph make_task_graph(deps_shape shape, std::size_t n, std::uint64_t seed);

/// A graph from explicit predecessor lists (tests, hand-made examples). Throws
/// std::invalid_argument unless every predecessor of task i is smaller than i and listed once.
[[nodiscard]] task_graph graph_from_preds(const std::vector<std::vector<std::uint32_t>>& preds);

/// The span S: the longest path through the graph, a path's length being the sum of t_i (plus
/// `per_task_ns` for each task on it). With no edge, max t_i. tasks.size() must equal the graph's.
[[nodiscard]] std::int64_t span_ns(std::span<const task> tasks, const task_graph& g,
                                   std::int64_t per_task_ns = 0);

}  // namespace clab
