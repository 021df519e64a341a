// The 'blocked' expert linear of rmoe_mm/moe/experts.py, as one C++ loop.
//
// Same algorithm and the same ATen calls as the pure-PyTorch version, but
// one parallel region per pass (experts split among the threads, each thread
// running single-threaded GEMMs on cache-sized blocks of W_core + R_e)
// instead of one per call, and no Python call per block.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <vector>

namespace {

std::vector<int64_t> starts_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> starts(counts.size() + 1, 0);
  for (size_t e = 0; e < counts.size(); ++e) {
    starts[e + 1] = starts[e] + counts[e];
  }
  return starts;
}

}  // namespace

// out[rows of e] = rows_e (W + R_e)^T + biases[e], blocks of `block` rows.
torch::Tensor blocked_forward(const torch::Tensor& rows,
                              const std::vector<int64_t>& counts,
                              const torch::Tensor& core_weight,
                              const torch::Tensor& residual_weight,
                              const torch::Tensor& biases, int64_t block) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t out_features = core_weight.size(0);
  const int64_t in_features = core_weight.size(1);
  auto out = at::empty({rows.size(0), out_features}, rows.options());
  const auto starts = starts_of(counts);
  const int64_t num_experts = static_cast<int64_t>(counts.size());
  at::parallel_for(0, num_experts, 1, [&](int64_t begin, int64_t end) {
    // OpenMP threads do not inherit the caller's no-grad mode.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto scratch = at::empty({block, in_features}, rows.options());
    for (int64_t e = begin; e < end; ++e) {
      if (counts[e] == 0) continue;
      auto x = rows.narrow(0, starts[e], counts[e]);
      auto y = out.narrow(0, starts[e], counts[e]);
      auto residual = residual_weight.select(0, e);
      auto bias = biases.select(0, e);
      for (int64_t start = 0; start < out_features; start += block) {
        const int64_t len = std::min(block, out_features - start);
        auto merged = scratch.narrow(0, 0, len);
        at::add_out(merged, core_weight.narrow(0, start, len),
                    residual.narrow(0, start, len));
        auto target = y.narrow(1, start, len);
        at::addmm_out(target, bias.narrow(0, start, len), x, merged.t());
      }
    }
  });
  return out;
}

// Returns {grad_rows, grad_core_weight} (undefined where not needed) and
// writes the residual weight gradient into grad_residual_weight if defined.
std::vector<torch::Tensor> blocked_backward(
    const torch::Tensor& rows, const torch::Tensor& grad_out,
    const std::vector<int64_t>& counts, const torch::Tensor& core_weight,
    const torch::Tensor& residual_weight,
    const c10::optional<torch::Tensor>& grad_residual_weight_opt,
    bool need_rows, bool need_core_weight, int64_t block) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t out_features = core_weight.size(0);
  const int64_t in_features = core_weight.size(1);
  const bool need_expert_weight = grad_residual_weight_opt.has_value() &&
                                  grad_residual_weight_opt->defined();
  torch::Tensor grad_rows, grad_core_weight;
  if (need_rows) grad_rows = at::empty_like(rows);
  if (need_core_weight && !need_expert_weight) {
    // Residuals frozen: the core's gradient is one GEMM over all rows.
    grad_core_weight = at::mm(grad_out.t(), rows);
  }
  if (!(need_rows || need_expert_weight)) return {grad_rows, grad_core_weight};
  const bool sum_core = need_core_weight && need_expert_weight;
  const auto starts = starts_of(counts);
  const int64_t num_experts = static_cast<int64_t>(counts.size());
  // One partial core gradient per thread (the first one is the result).
  std::vector<torch::Tensor> partial(at::get_num_threads());
  at::parallel_for(0, num_experts, 1, [&](int64_t begin, int64_t end) {
    // OpenMP threads do not inherit the caller's no-grad mode.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto scratch = at::empty({block, in_features}, rows.options());
    torch::Tensor core_sum;
    for (int64_t e = begin; e < end; ++e) {
      if (counts[e] == 0) {
        if (need_expert_weight) grad_residual_weight_opt->select(0, e).zero_();
        continue;
      }
      auto x = rows.narrow(0, starts[e], counts[e]);
      auto dy_all = grad_out.narrow(0, starts[e], counts[e]);
      auto residual = residual_weight.select(0, e);
      const bool first = !core_sum.defined();
      if (sum_core && first) core_sum = at::empty_like(core_weight);
      for (int64_t start = 0; start < out_features; start += block) {
        const int64_t len = std::min(block, out_features - start);
        auto dy = dy_all.narrow(1, start, len);
        if (need_rows) {
          auto merged = scratch.narrow(0, 0, len);
          at::add_out(merged, core_weight.narrow(0, start, len),
                      residual.narrow(0, start, len));
          auto dx = grad_rows.narrow(0, starts[e], counts[e]);
          if (start == 0) {
            at::mm_out(dx, dy, merged);
          } else {
            dx.addmm_(dy, merged);
          }
        }
        if (need_expert_weight) {
          auto target =
              grad_residual_weight_opt->select(0, e).narrow(0, start, len);
          at::mm_out(target, dy.t(), x);
          if (sum_core) {
            // Summed while the expert's block is still in cache.
            auto sum = core_sum.narrow(0, start, len);
            if (first) {
              sum.copy_(target);
            } else {
              sum.add_(target);
            }
          }
        }
      }
    }
    if (core_sum.defined()) partial[at::get_thread_num()] = core_sum;
  });
  if (sum_core) {
    for (auto& part : partial) {
      if (!part.defined()) continue;
      if (!grad_core_weight.defined()) {
        grad_core_weight = part;
      } else {
        grad_core_weight.add_(part);
      }
    }
    if (!grad_core_weight.defined()) {
      grad_core_weight = at::zeros_like(core_weight);
    }
  }
  return {grad_rows, grad_core_weight};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("blocked_forward", &blocked_forward,
        "Blocked expert linear, forward");
  m.def("blocked_backward", &blocked_backward,
        "Blocked expert linear, backward");
}
