// CUDA kernels of dualmcmc::langevin_step and dualmcmc::langevin_step_: one thread per Philox block (4 float or
// 2 double elements), vector loads when aligned, Philox state from torch's CUDA generator (graph-capture safe).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <ATen/cuda/PhiloxUtils.cuh>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <mutex>

#include "../langevin.h"
#include "../langevin_checks.h"

namespace dualmcmc::cuda {
namespace {

constexpr int kThreads = 256;
constexpr uint64_t kOffsetIncrement = 4;  // one 128-bit Philox counter per block (= per thread per launch)

enum class NoiseSource : int { kNone = 0, kExplicit = 1, kPhilox = 2 };

template <typename acc_t>
struct BlockNormals {
  acc_t v[NormalsPerBlock<acc_t>::value];
};

// The float normals are langevin.h's block_normals_f, every rounding explicit: the same bits as the CPU kernels.
__device__ __forceinline__ BlockNormals<float> block_normals(uint64_t seed, uint64_t offset, uint64_t block, float) {
  BlockNormals<float> z;
  block_normals_f(seed, offset / 4, block, z.v);
  return z;
}

__device__ __forceinline__ BlockNormals<double> block_normals(uint64_t seed, uint64_t offset, uint64_t block, double) {
  const Philox4 r = philox4x32_10(seed, offset / 4, block);
  const double rad = sqrt(-2.0 * log(uniform_open_d(r.v[0], r.v[1])));
  double s, c;
  sincospi(2.0 * uniform_d(r.v[2], r.v[3]), &s, &c);
  return BlockNormals<double>{{rad * c, rad * s}};
}

template <typename scalar_t, int N>
struct alignas(sizeof(scalar_t) * N) Pack {
  scalar_t v[N];
};

template <typename scalar_t>
__global__ void langevin_kernel(const scalar_t* x, const scalar_t* grad,
                                const scalar_t* noise, scalar_t* out, int64_t n,
                                LangevinParams<at::opmath_type<scalar_t>> p, NoiseSource source,
                                at::PhiloxCudaState philox, bool vectorized) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kPer = NormalsPerBlock<acc_t>::value;
  uint64_t seed = 0, offset = 0;
  if (source == NoiseSource::kPhilox) {
    const auto seeds = at::cuda::philox::unpack(philox);  // reads device memory when captured in a graph
    seed = std::get<0>(seeds);
    offset = std::get<1>(seeds);
  }
  const int64_t n_blocks = (n + kPer - 1) / kPer;
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; b < n_blocks;
       b += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    BlockNormals<acc_t> eps{};
    if (source == NoiseSource::kPhilox) eps = block_normals(seed, offset, static_cast<uint64_t>(b), acc_t(0));
    const int64_t i0 = b * kPer;
    if (vectorized && i0 + kPer <= n) {
      using P = Pack<scalar_t, kPer>;
      const P xv = reinterpret_cast<const P*>(x)[b];
      const P gv = reinterpret_cast<const P*>(grad)[b];
      P nv{};
      if (source == NoiseSource::kExplicit) nv = reinterpret_cast<const P*>(noise)[b];
      P ov;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const acc_t e = source == NoiseSource::kExplicit ? static_cast<acc_t>(nv.v[k]) : eps.v[k];
        ov.v[k] = static_cast<scalar_t>(langevin_update<acc_t>(static_cast<acc_t>(xv.v[k]), static_cast<acc_t>(gv.v[k]), e, source != NoiseSource::kNone, p));
      }
      reinterpret_cast<P*>(out)[b] = ov;
    } else {
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int64_t i = i0 + k;
        if (i >= n) break;
        const acc_t e = source == NoiseSource::kExplicit ? static_cast<acc_t>(noise[i]) : eps.v[k];
        out[i] = static_cast<scalar_t>(langevin_update<acc_t>(static_cast<acc_t>(x[i]), static_cast<acc_t>(grad[i]), e, source != NoiseSource::kNone, p));
      }
    }
  }
}

bool aligned(const void* ptr, size_t bytes) { return reinterpret_cast<uintptr_t>(ptr) % bytes == 0; }

void launch(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std, double prior_precision,
            const std::optional<at::Tensor>& noise, const std::optional<at::Generator>& generator,
            std::optional<double> clamp_min, std::optional<double> clamp_max, const at::Tensor& out) {
  const int64_t n = x.numel();
  if (n == 0) return;
  const c10::cuda::CUDAGuard device_guard(x.device());
  NoiseSource source = NoiseSource::kNone;
  at::PhiloxCudaState philox;
  if (noise_std != 0.0) {
    if (noise.has_value()) {
      source = NoiseSource::kExplicit;
    } else {
      source = NoiseSource::kPhilox;
      auto* gen = at::get_generator_or_default<at::CUDAGeneratorImpl>(
          generator, at::cuda::detail::getDefaultCUDAGenerator(x.device().index()));
      TORCH_CHECK_VALUE(gen->device() == x.device(), "langevin_step: 'generator' is on ", gen->device(),
                        " but 'x' is on ", x.device());
      std::lock_guard<std::mutex> lock(gen->mutex_);  // Note [Acquire lock when using random generators]
      philox = gen->philox_cuda_state(kOffsetIncrement);
    }
  }
  const at::Tensor x_c = x.contiguous();
  const at::Tensor grad_c = grad.contiguous();
  const at::Tensor noise_c = source == NoiseSource::kExplicit ? noise->contiguous() : at::Tensor();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "langevin_step_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kPer = NormalsPerBlock<acc_t>::value;
    const auto p = make_params<acc_t>(step_size, noise_std, prior_precision, clamp_min, clamp_max);
    const scalar_t* noise_ptr = noise_c.defined() ? noise_c.const_data_ptr<scalar_t>() : nullptr;
    const size_t pack_bytes = sizeof(scalar_t) * kPer;
    const bool vectorized = aligned(x_c.const_data_ptr(), pack_bytes) && aligned(grad_c.const_data_ptr(), pack_bytes) &&
                            aligned(out.const_data_ptr(), pack_bytes) &&
                            (noise_ptr == nullptr || aligned(noise_ptr, pack_bytes));
    const int64_t n_blocks = (n + kPer - 1) / kPer;
    const int64_t grid = std::min<int64_t>((n_blocks + kThreads - 1) / kThreads, int64_t(1) << 30);
    langevin_kernel<scalar_t><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
        x_c.const_data_ptr<scalar_t>(), grad_c.const_data_ptr<scalar_t>(), noise_ptr, out.mutable_data_ptr<scalar_t>(),
        n, p, source, philox, vectorized);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor langevin_step_cuda(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std,
                              double prior_precision, const std::optional<at::Tensor>& noise,
                              std::optional<at::Generator> generator, std::optional<double> clamp_min,
                              std::optional<double> clamp_max) {
  check_langevin_args("langevin_step", x, grad, step_size, noise_std, prior_precision, noise, clamp_min, clamp_max,
                      /*inplace=*/false);
  at::Tensor out = at::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::Contiguous));
  launch(x, grad, step_size, noise_std, prior_precision, noise, generator, clamp_min, clamp_max, out);
  return out;
}

void langevin_step_inplace_cuda(const at::Tensor& x, const at::Tensor& grad, double step_size, double noise_std,
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

TORCH_LIBRARY_IMPL(dualmcmc, CUDA, m) {
  m.impl("langevin_step", &langevin_step_cuda);
  m.impl("langevin_step_", &langevin_step_inplace_cuda);
}

}  // namespace dualmcmc::cuda
