// CPU kernels of dualmcmc::langevin_step and dualmcmc::langevin_step_: one pass over memory, spread over cores
// with at::parallel_for (the extension is built with OpenMP, see setup.py). Without noise, and with an explicit
// noise tensor, the pass is a plain vector loop; with Philox noise the normals are drawn in L1-sized tiles
// inside the pass. Each element's result depends only on its index, never on the split over threads.
//
// Two implementations of every loop, chosen once per process by the CPU's features:
//   avx2      cpu/kernels_avx2.cpp: AVX2 + FMA + F16C intrinsics, 8 float lanes (4 double);
//   portable  the loops below, for any CPU (the compiler vectorises what it can).
// They compute the same bits (langevin.h writes every rounding out; tests/test_ops_kernels.py compares them).
// DUALMCMC_CPU_ISA=portable forces the portable loops; torch.ops.dualmcmc._cpu_isa switches at run time.
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>

#include "../langevin.h"
#include "../langevin_checks.h"
#include "kernels_avx2.h"

namespace dualmcmc::cpu {
namespace {

constexpr int64_t kTile = 2048;        // elements per Philox tile: its normals stay in L1
constexpr int64_t kTilesPerTask = 16;  // 32K elements per task (at::internal::GRAIN_SIZE)
constexpr int64_t kGrain = 1 << 16;    // elements per task without Philox noise (a memory-bound axpy)

using Noise = avx2::Noise;

// ---- which implementation runs ---------------------------------------------------------------------------------
enum class Isa : int { kPortable = 0, kAvx2 = 1 };

Isa default_isa() {
  const char* env = std::getenv("DUALMCMC_CPU_ISA");
  if (env != nullptr && std::string(env) == "portable") return Isa::kPortable;
  return avx2::supported() ? Isa::kAvx2 : Isa::kPortable;
}

std::atomic<int>& isa_state() {
  static std::atomic<int> state{static_cast<int>(default_isa())};
  return state;
}

bool use_avx2() { return isa_state().load(std::memory_order_relaxed) == static_cast<int>(Isa::kAvx2); }

// ---- portable loops: the definitions of langevin.h, flags hoisted into template parameters ---------------------
template <typename scalar_t, typename acc_t, bool kPrior, Noise kMode>
void update_portable_t(const scalar_t* x, const scalar_t* grad, const scalar_t* noise, const acc_t* eps, scalar_t* out,
                       int64_t n, const LangevinParams<acc_t>& p) {
  // Clamp always applied (open ends are +-inf: same result). out may be x (read before write, same index).
  for (int64_t i = 0; i < n; ++i) {
    acc_t e = acc_t(0);
    if (kMode == Noise::kExplicit) e = static_cast<acc_t>(noise[i]);
    if (kMode == Noise::kBuffer) e = eps[i];
    out[i] = static_cast<scalar_t>(langevin_update_t<acc_t, kPrior, kMode != Noise::kNone, true, true>(
        static_cast<acc_t>(x[i]), static_cast<acc_t>(grad[i]), e, p));
  }
}

template <typename scalar_t, typename acc_t>
void update_portable(const scalar_t* x, const scalar_t* grad, const scalar_t* noise, const acc_t* eps, scalar_t* out,
                     int64_t n, const LangevinParams<acc_t>& p, Noise mode) {
  const bool prior = p.prior_precision != acc_t(0);
  switch (mode) {
    case Noise::kNone:
      return prior ? update_portable_t<scalar_t, acc_t, true, Noise::kNone>(x, grad, noise, eps, out, n, p)
                   : update_portable_t<scalar_t, acc_t, false, Noise::kNone>(x, grad, noise, eps, out, n, p);
    case Noise::kExplicit:
      return prior ? update_portable_t<scalar_t, acc_t, true, Noise::kExplicit>(x, grad, noise, eps, out, n, p)
                   : update_portable_t<scalar_t, acc_t, false, Noise::kExplicit>(x, grad, noise, eps, out, n, p);
    case Noise::kBuffer:
      return prior ? update_portable_t<scalar_t, acc_t, true, Noise::kBuffer>(x, grad, noise, eps, out, n, p)
                   : update_portable_t<scalar_t, acc_t, false, Noise::kBuffer>(x, grad, noise, eps, out, n, p);
  }
}

// One span of the update, by the selected implementation.
template <typename scalar_t, typename acc_t>
void update_span(const scalar_t* x, const scalar_t* grad, const scalar_t* noise, const acc_t* eps, scalar_t* out,
                 int64_t n, const LangevinParams<acc_t>& p, Noise mode) {
  if (use_avx2()) {
    if constexpr (std::is_same_v<scalar_t, float>) {
      return avx2::update_f32(x, grad, noise, eps, out, n, p, mode);
    } else if constexpr (std::is_same_v<scalar_t, double>) {
      return avx2::update_f64(x, grad, noise, eps, out, n, p, mode);
    } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
      return avx2::update_f16(reinterpret_cast<const uint16_t*>(x), reinterpret_cast<const uint16_t*>(grad),
                              reinterpret_cast<const uint16_t*>(noise), eps, reinterpret_cast<uint16_t*>(out), n, p, mode);
    } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      return avx2::update_bf16(reinterpret_cast<const uint16_t*>(x), reinterpret_cast<const uint16_t*>(grad),
                               reinterpret_cast<const uint16_t*>(noise), eps, reinterpret_cast<uint16_t*>(out), n, p, mode);
    }
  }
  update_portable<scalar_t, acc_t>(x, grad, noise, eps, out, n, p, mode);
}

// ---- Philox normals --------------------------------------------------------------------------------------------
void fill_normals(uint64_t seed, uint64_t counter_lo, uint64_t first_block, int64_t n_blocks, float* out) {
  if (use_avx2()) return avx2::fill_normals_f32(seed, counter_lo, first_block, n_blocks, out);
  for (int64_t b = 0; b < n_blocks; ++b) block_normals_f(seed, counter_lo, first_block + static_cast<uint64_t>(b), out + 4 * b);
}

void fill_normals(uint64_t seed, uint64_t counter_lo, uint64_t first_block, int64_t n_blocks, double* out) {
  constexpr double kTwoPi = 6.283185307179586476925;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const Philox4 r = philox4x32_10(seed, counter_lo, first_block + static_cast<uint64_t>(b));
    const double rad = std::sqrt(-2.0 * std::log(uniform_open_d(r.v[0], r.v[1])));
    const double angle = kTwoPi * uniform_d(r.v[2], r.v[3]);
    out[2 * b + 0] = rad * std::cos(angle);
    out[2 * b + 1] = rad * std::sin(angle);
  }
}

// ---- the pass ----------------------------------------------------------------------------------------------------
template <typename scalar_t>
void langevin_contiguous(const scalar_t* x, const scalar_t* grad, const scalar_t* noise, scalar_t* out, int64_t n,
                         const LangevinParams<at::opmath_type<scalar_t>>& p, Noise mode, bool philox, uint64_t seed) {
  using acc_t = at::opmath_type<scalar_t>;
  if (!philox) {
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      update_span<scalar_t, acc_t>(x + begin, grad + begin, noise == nullptr ? nullptr : noise + begin, nullptr,
                                   out + begin, end - begin, p, mode);
    });
    return;
  }
  constexpr int64_t per_block = NormalsPerBlock<acc_t>::value;
  static_assert(kTile % (8 * 4) == 0, "a tile holds whole 8-lane batches of Philox blocks");
  const int64_t n_tiles = (n + kTile - 1) / kTile;
  at::parallel_for(0, n_tiles, kTilesPerTask, [&](int64_t t_begin, int64_t t_end) {
    alignas(64) acc_t eps[kTile];
    for (int64_t t = t_begin; t < t_end; ++t) {
      const int64_t i0 = t * kTile;
      const int64_t len = std::min(kTile, n - i0);
      fill_normals(seed, 0, static_cast<uint64_t>(i0 / per_block), (len + per_block - 1) / per_block, eps);
      update_span<scalar_t, acc_t>(x + i0, grad + i0, nullptr, eps, out + i0, len, p, Noise::kBuffer);
    }
  });
}

// Writes the update of (x, grad, noise) into `out` (contiguous; may be x itself). Draws a seed only for noise.
void launch(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std, double prior_precision,
            const std::optional<at::Tensor>& noise, const std::optional<at::Generator>& generator,
            std::optional<double> clamp_min, std::optional<double> clamp_max, const at::Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  Noise mode = Noise::kNone;
  bool philox = false;
  uint64_t seed = 0;
  if (noise_std != 0.0) {
    if (noise.has_value()) {
      mode = Noise::kExplicit;
    } else {
      mode = Noise::kBuffer;
      philox = true;
      auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(generator, at::detail::getDefaultCPUGenerator());
      std::lock_guard<std::mutex> lock(gen->mutex_);  // Note [Acquire lock when using random generators]
      seed = gen->random64();
    }
  }
  const at::Tensor x_c = x.contiguous();
  const at::Tensor grad_c = grad.contiguous();
  const at::Tensor noise_c = mode == Noise::kExplicit ? noise->contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_step_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto p = make_params<acc_t>(step_size, noise_std, prior_precision, clamp_min, clamp_max);
    langevin_contiguous<scalar_t>(x_c.const_data_ptr<scalar_t>(), grad_c.const_data_ptr<scalar_t>(),
                                  noise_c.defined() ? noise_c.const_data_ptr<scalar_t>() : nullptr,
                                  out.mutable_data_ptr<scalar_t>(), n, p, mode, philox, seed);
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

// ---- test hooks (private ops) -----------------------------------------------------------------------------------
// Philox4x32-10 of each row: counter (N, 4) and key (N, 2) hold 32-bit words as int64; returns the (N, 4) words.
at::Tensor philox4x32_10_cpu(const at::Tensor& counter, const at::Tensor& key) {
  TORCH_CHECK_VALUE(counter.dim() == 2 && counter.size(1) == 4 && counter.scalar_type() == at::kLong,
                    "_philox4x32_10: 'counter' must be an (N, 4) int64 tensor");
  TORCH_CHECK_VALUE(key.dim() == 2 && key.size(1) == 2 && key.size(0) == counter.size(0) && key.scalar_type() == at::kLong,
                    "_philox4x32_10: 'key' must be an (N, 2) int64 tensor with N rows like 'counter'");
  const at::Tensor c = counter.contiguous(), k = key.contiguous();
  at::Tensor out = at::empty({counter.size(0), 4}, counter.options());
  const int64_t* cp = c.const_data_ptr<int64_t>();
  const int64_t* kp = k.const_data_ptr<int64_t>();
  int64_t* op = out.mutable_data_ptr<int64_t>();
  auto w = [](int64_t v) { return static_cast<uint64_t>(static_cast<uint32_t>(v)); };
  for (int64_t r = 0; r < counter.size(0); ++r) {
    const Philox4 res = philox4x32_10(w(kp[2 * r]) | (w(kp[2 * r + 1]) << 32), w(cp[4 * r]) | (w(cp[4 * r + 1]) << 32),
                                      w(cp[4 * r + 2]) | (w(cp[4 * r + 3]) << 32));
    for (int j = 0; j < 4; ++j) op[4 * r + j] = static_cast<int64_t>(res.v[j]);
  }
  return out;
}

// The first n normals of the stream (seed, offset) in float32 or float64, by the selected implementation.
at::Tensor philox_normal_cpu(int64_t seed, int64_t offset, int64_t n, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(dtype == at::kFloat || dtype == at::kDouble, "_philox_normal: 'dtype' must be float32 or float64");
  TORCH_CHECK_VALUE(n >= 0 && offset >= 0 && offset % 4 == 0, "_philox_normal: n >= 0 and offset a multiple of 4");
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES(dtype, "_philox_normal", [&] {
    constexpr int64_t per = NormalsPerBlock<scalar_t>::value;
    const int64_t n_blocks = (n + per - 1) / per;
    std::vector<scalar_t> buf(static_cast<size_t>(n_blocks * per));
    fill_normals(static_cast<uint64_t>(seed), static_cast<uint64_t>(offset) / 4, 0, n_blocks, buf.data());
    std::memcpy(out.mutable_data_ptr<scalar_t>(), buf.data(), sizeof(scalar_t) * static_cast<size_t>(n));
  });
  return out;
}

// Reads, and with an argument sets, the CPU implementation: "avx2" or "portable".
std::string cpu_isa(std::optional<c10::string_view> isa) {
  if (isa.has_value()) {
    const std::string want(isa->data(), isa->size());
    if (want == "portable") {
      isa_state().store(static_cast<int>(Isa::kPortable));
    } else if (want == "avx2") {
      TORCH_CHECK_VALUE(avx2::supported(), "_cpu_isa: this build or CPU has no AVX2+FMA+F16C kernels");
      isa_state().store(static_cast<int>(Isa::kAvx2));
    } else {
      TORCH_CHECK_VALUE(false, "_cpu_isa: 'isa' must be 'avx2' or 'portable', got '", want, "'");
    }
  }
  return use_avx2() ? "avx2" : "portable";
}

}  // namespace

TORCH_LIBRARY_IMPL(dualmcmc, CPU, m) {
  m.impl("langevin_step", &langevin_step_cpu);
  m.impl("langevin_step_", &langevin_step_inplace_cpu);
  m.impl("_philox4x32_10", &philox4x32_10_cpu);
}

TORCH_LIBRARY_IMPL(dualmcmc, CompositeExplicitAutograd, m) {
  m.impl("_philox_normal", &philox_normal_cpu);
  m.impl("_cpu_isa", &cpu_isa);
}

}  // namespace dualmcmc::cpu
