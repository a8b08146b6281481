// The graph generators and the span. Every shape is built in id order, each task's predecessors
// drawn among smaller ids only, so the result is topological by construction.
#include "workloads/deps.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace clab {

std::string_view to_string(deps_shape s) {
  switch (s) {
    case deps_shape::none:
      return "none";
    case deps_shape::chain:
      return "chain";
    case deps_shape::tree:
      return "tree";
    case deps_shape::dag:
      return "dag";
  }
  return "?";
}

std::optional<deps_shape> parse_deps_shape(std::string_view name) {
  for (const deps_shape s :
       {deps_shape::none, deps_shape::chain, deps_shape::tree, deps_shape::dag}) {
    if (name == to_string(s)) return s;
  }
  return std::nullopt;
}

task_graph make_task_graph(deps_shape shape, std::size_t n, std::uint64_t seed) {
  task_graph g;
  g.shape = shape;
  g.first.assign(1, 0);
  g.first.reserve(n + 1);
  // A salt of its own, so the graph's random numbers are not the durations' (task.cpp mixes the
  // same seed for those).
  std::uint64_t state = splitmix64(seed ^ 0xD6E8FEB86659FD93ULL);
  auto next = [&state] {
    state = splitmix64(state);
    return state;
  };
  for (std::size_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::uint32_t>(i);
    if (i > 0) {
      switch (shape) {
        case deps_shape::none:
          break;
        case deps_shape::chain:
          g.pred.push_back(id - 1);
          break;
        case deps_shape::tree:
          g.pred.push_back((id - 1) / 2);
          break;
        case deps_shape::dag: {
          // 1 to 3 distinct predecessors among the window of ids just before i (fewer where the
          // window is smaller): every task but 0 waits for at least one other.
          const std::uint32_t window = std::min<std::uint32_t>(k_dag_window, id);
          const std::uint32_t want = std::min(1 + static_cast<std::uint32_t>(next() % 3), window);
          const std::size_t begin = g.pred.size();
          while (g.pred.size() - begin < want) {
            const std::uint32_t p = id - 1 - static_cast<std::uint32_t>(next() % window);
            if (std::find(g.pred.begin() + static_cast<std::ptrdiff_t>(begin), g.pred.end(), p) ==
                g.pred.end()) {
              g.pred.push_back(p);
            }
          }
          std::sort(g.pred.begin() + static_cast<std::ptrdiff_t>(begin), g.pred.end());
          break;
        }
      }
    }
    g.first.push_back(static_cast<std::uint32_t>(g.pred.size()));
  }
  return g;
}

task_graph graph_from_preds(const std::vector<std::vector<std::uint32_t>>& preds) {
  task_graph g;
  g.shape = deps_shape::dag;
  for (std::size_t i = 0; i < preds.size(); ++i) {
    std::vector<std::uint32_t> ps = preds[i];
    std::sort(ps.begin(), ps.end());
    for (std::size_t k = 0; k < ps.size(); ++k) {
      if (ps[k] >= i || (k > 0 && ps[k] == ps[k - 1])) {
        throw std::invalid_argument("task graph: task " + std::to_string(i) +
                                    " lists predecessor " + std::to_string(ps[k]) +
                                    " (each must be a smaller id, once)");
      }
    }
    g.pred.insert(g.pred.end(), ps.begin(), ps.end());
    g.first.push_back(static_cast<std::uint32_t>(g.pred.size()));
  }
  return g;
}

std::int64_t span_ns(std::span<const task> tasks, const task_graph& g, std::int64_t per_task_ns) {
  if (g.size() != tasks.size()) {
    throw std::invalid_argument("span: the graph has " + std::to_string(g.size()) +
                                " tasks, the task set " + std::to_string(tasks.size()));
  }
  // finish[i]: the longest path that ends with task i. Predecessors come first in id order.
  std::vector<std::int64_t> finish(tasks.size(), 0);
  std::int64_t longest = 0;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    std::int64_t ready = 0;
    for (const std::uint32_t p : g.preds(i)) ready = std::max(ready, finish[p]);
    finish[i] = ready + tasks[i].duration_ns() + per_task_ns;
    longest = std::max(longest, finish[i]);
  }
  return longest;
}

}  // namespace clab
