// CPU kernels of dualmcmc::langevin_step and dualmcmc::langevin_step_: one pass over memory, noise drawn in
// L1-sized tiles inside the pass, tiles spread over cores with at::parallel_for.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <mutex>

#include "../langevin.h"
#include "../langevin_checks.h"
#include "normal_noise_cpu.h"

namespace dualmcmc::cpu {
namespace {

constexpr int64_t kTile = 2048;       // elements per tile: its noise buffer stays in L1
constexpr int64_t kTilesPerTask = 16;  // 32K elements, at::internal::GRAIN_SIZE

enum class NoiseSource { kNone, kExplicit, kPhilox };

template <typename scalar_t>
void langevin_contiguous(const scalar_t* x, const scalar_t* grad, const scalar_t* noise, scalar_t* out, int64_t n,
                         const LangevinParams<at::opmath_type<scalar_t>>& p, NoiseSource source, uint64_t seed) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int64_t per_block = NormalsPerBlock<acc_t>::value;
  static_assert(kTile % 4 == 0, "a tile holds whole Philox blocks");
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  at::parallel_for(0, n_tiles, kTilesPerTask, [&](int64_t t_begin, int64_t t_end) {
    alignas(64) acc_t eps[kTile];
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t i0 = t * kTile;
      const int64_t len = std::min(kTile, n - i0);
      if (source == NoiseSource::kNone) {
        for (int64_t i = 0; i < len; ++i)
          out[i0 + i] = static_cast<scalar_t>(
              langevin_update<acc_t>(static_cast<acc_t>(x[i0 + i]), static_cast<acc_t>(grad[i0 + i]), acc_t(0), p));
        continue;
      }
      if (source == NoiseSource::kPhilox) {
        fill_normals(seed, static_cast<uint64_t>(i0 / per_block), (len + per_block - 1) / per_block, eps);
      } else {
        for (int64_t i = 0; i < len; ++i) eps[i] = static_cast<acc_t>(noise[i0 + i]);
      }
      for (int64_t i = 0; i < len; ++i)
        out[i0 + i] = static_cast<scalar_t>(
            langevin_update<acc_t>(static_cast<acc_t>(x[i0 + i]), static_cast<acc_t>(grad[i0 + i]), eps[i], p));
    }
  });
}

// Writes the update of (x, grad, noise) into `out` (contiguous; may alias x). Draws a seed only when it needs noise.
void launch(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std, double prior_precision,
            const std::optional<at::Tensor>& noise, const std::optional<at::Generator>& generator,
            std::optional<double> clamp_min, std::optional<double> clamp_max, const at::Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  NoiseSource source = NoiseSource::kNone;
  uint64_t seed = 0;
  if (noise_std != 0.0) {
    if (noise.has_value()) {
      source = NoiseSource::kExplicit;
    } else {
      source = NoiseSource::kPhilox;
      auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
      std::lock_guard<std::mutex> lock(gen->mutex_);  // Note [Acquire lock when using random generators]
      seed = gen->random64();
    }
  }
  const at::Tensor x_c = x.contiguous();
  const at::Tensor grad_c = grad.contiguous();
  const at::Tensor noise_c = source == NoiseSource::kExplicit ? noise->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_step_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = make_params<acc_t>(step_size, noise_std, prior_precision, clamp_min, clamp_max);
    langevin_contiguous<scalar_t>(x_c.const_data_ptr<scalar_t>(), grad_c.const_data_ptr<scalar_t>(),
                                  noise_c.defined() ? noise_c.const_data_ptr<scalar_t>() : nullptr,
                                  out.mutable_data_ptr<scalar_t>(), n, p, source, seed);
  });
}

at::Tensor langevin_step_cpu(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std,
                             double prior_precision, const std::optional<at::Tensor>& noise,
                             std::optional<at::Generator> generator, std::optional<double> clamp_min,
                             std::optional<double> clamp_max) {
  check_langevin_args("langevin_step", x, grad, step_size, noise_std, prior_precision, noise, clamp_min, clamp_max,
                      /*inplace=*/false);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  launch(x, grad, step_size, noise_std, prior_precision, noise, generator, clamp_min, clamp_max, out);
  return out;
}

void langevin_step_inplace_cpu(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std,
                               double prior_precision, const std::optional<at::Tensor>& noise,
                               std::optional<at::Generator> generator, std::optional<double> clamp_min,
                               std::optional<double> clamp_max) {
  check_langevin_args("langevin_step_", x, grad, step_size, noise_std, prior_precision, noise, clamp_min, clamp_max,
                      /*inplace=*/true);
  if (x.is_contiguous()) {
    launch(x, grad, step_size, noise_std, prior_precision, noise, generator, clamp_min, clamp_max, x);
  } else {  // strided x: update a contiguous copy, then write it back through x's strides
    at::Tensor tmp = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
    launch(x, grad, step_size, noise_std, prior_precision, noise, generator, clamp_min, clamp_max, tmp);
    x.copy_(tmp);
  }
}

}  // namespace

TORCH_LIBRARY_IMPL(dualmcmc, CPU, m) {
  m.impl("langevin_step", &langevin_step_cpu);
  m.impl("langevin_step_", &langevin_step_inplace_cpu);
}

}  // namespace dualmcmc::cpu
