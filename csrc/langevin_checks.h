// Argument checks shared by the CPU and CUDA kernels: every error names the argument and the fix, and runs
// before anything is written, so a failing in-place call leaves x untouched.
#pragma once

#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include "langevin.h"

#include <cmath>
#include <limits>
#include <optional>

namespace dualmcmc {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_langevin_args(const char* op, const at::Tensor& x, const at::Tensor& grad, double step_size,
                                double noise_std, double prior_precision, const std::optional<at::Tensor>& noise,
                                std::optional<double> clamp_min, std::optional<double> clamp_max, bool inplace) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), op,
                   ": 'x' must be float32, float64, float16 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), op, ": 'grad' dtype ", grad.scalar_type(),
                   " must match 'x' dtype ", x.scalar_type(), "; cast it with .to(x.dtype)");
  TORCH_CHECK_VALUE(grad.sizes() == x.sizes(), op, ": 'grad' shape ", grad.sizes(), " must match 'x' shape ", x.sizes());
  TORCH_CHECK_VALUE(grad.device() == x.device(), op, ": 'grad' is on ", grad.device(), " but 'x' is on ", x.device(),
                    "; move them to one device");
  if (noise.has_value()) {
    const at::Tensor& n = *noise;
    TORCH_CHECK_TYPE(n.scalar_type() == x.scalar_type(), op, ": 'noise' dtype ", n.scalar_type(),
                     " must match 'x' dtype ", x.scalar_type());
    TORCH_CHECK_VALUE(n.sizes() == x.sizes(), op, ": 'noise' shape ", n.sizes(), " must match 'x' shape ", x.sizes());
    TORCH_CHECK_VALUE(n.device() == x.device(), op, ": 'noise' is on ", n.device(), " but 'x' is on ", x.device());
  }
  TORCH_CHECK_VALUE(std::isfinite(step_size) && step_size >= 0, op, ": 'step_size' must be finite and >= 0, got ", step_size);
  TORCH_CHECK_VALUE(std::isfinite(noise_std) && noise_std >= 0, op, ": 'noise_std' must be finite and >= 0, got ", noise_std);
  TORCH_CHECK_VALUE(std::isfinite(prior_precision) && prior_precision >= 0, op,
                    ": 'prior_precision' must be finite and >= 0, got ", prior_precision);
  TORCH_CHECK_VALUE(!(clamp_min.has_value() && std::isnan(*clamp_min)), op, ": 'clamp_min' must not be NaN");
  TORCH_CHECK_VALUE(!(clamp_max.has_value() && std::isnan(*clamp_max)), op, ": 'clamp_max' must not be NaN");
  TORCH_CHECK_VALUE(!(clamp_min.has_value() && clamp_max.has_value() && *clamp_min > *clamp_max), op, ": clamp_min (",
                    *clamp_min, ") must be <= clamp_max (", *clamp_max, ")");
  if (inplace) {
    TORCH_CHECK_VALUE(at::has_internal_overlap(x) != at::MemOverlap::Yes, op,
                      ": 'x' must not have overlapping memory (e.g. from expand()); pass x.clone()");
    TORCH_CHECK(!x.requires_grad() || !c10::GradMode::is_enabled(), op,
                ": 'x' requires grad; use the functional langevin_step, or detach x for an in-place chain");
    // Like torch's own in-place ops: an input that shares only part of x's memory would be read after the
    // kernel has overwritten it. (The same tensor as x, or memory x does not touch, is fine.)
    TORCH_CHECK_VALUE(at::get_overlap_status(x, grad) != at::MemOverlapStatus::Partial, op,
                      ": 'grad' partially overlaps 'x' in memory (e.g. two shifted slices of one tensor); "
                      "pass grad.clone()");
    if (noise.has_value()) {
      TORCH_CHECK_VALUE(at::get_overlap_status(x, *noise) != at::MemOverlapStatus::Partial, op,
                        ": 'noise' partially overlaps 'x' in memory; pass noise.clone()");
    }
  }
}

// Builds the compute-type parameters from the schema's doubles.
template <typename acc_t>
LangevinParams<acc_t> make_params(double step_size, double noise_std, double prior_precision, std::optional<double> clamp_min,
                   std::optional<double> clamp_max) {
  LangevinParams<acc_t> p;
  p.drift = static_cast<acc_t>(0.5 * step_size * step_size);
  p.prior_precision = static_cast<acc_t>(prior_precision);
  p.noise_std = static_cast<acc_t>(noise_std);
  p.has_min = clamp_min.has_value();
  p.has_max = clamp_max.has_value();
  // An open end is -inf / +inf, so the vector kernels can always clamp (the result is the same).
  p.clamp_min = static_cast<acc_t>(clamp_min.value_or(-std::numeric_limits<double>::infinity()));
  p.clamp_max = static_cast<acc_t>(clamp_max.value_or(std::numeric_limits<double>::infinity()));
  return p;
}

}  // namespace dualmcmc
