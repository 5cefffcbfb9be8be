// The Langevin update and the counter-based normal noise it adds, shared by the CPU and CUDA kernels.
//
//   x' = clamp(x - 0.5 * a^2 * (grad + p * x) + b * eps),   eps ~ N(0, 1)
//
// Noise: element i belongs to Philox block j = i / kNormalsPerBlock(T). Block j is Philox4x32-10 with
// key = seed and counter = (offset / 4 in the low 64 bits, j in the high 64 bits), the layout curand_init(seed,
// subsequence = j, offset) uses, so the op honours torch's CUDA offset bookkeeping (it reserves 4 per call).
// The value of element i depends only on (seed, offset, i): not on threads, tiles, grid size or strides.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DUALMCMC_HD __host__ __device__ __forceinline__
#else
#define DUALMCMC_HD inline __attribute__((always_inline))
#endif

namespace dualmcmc {

// Parameters of one update, in the compute type (float for half types, double for double).
template <typename acc_t>
struct LangevinParams {
  acc_t drift;            // 0.5 * step_size^2
  acc_t prior_precision;  // p
  acc_t noise_std;        // b
  acc_t clamp_min;
  acc_t clamp_max;
  bool has_min;
  bool has_max;
};

template <typename acc_t>
DUALMCMC_HD acc_t langevin_update(acc_t x, acc_t grad, acc_t eps, const LangevinParams<acc_t>& p) {
  // Same operation order as the eager reference, so float32 results agree to the last bit or two.
  acc_t y = (p.prior_precision != acc_t(0)) ? x - p.drift * (grad + p.prior_precision * x) : x - p.drift * grad;
  y = y + p.noise_std * eps;
  if (p.has_min) y = y < p.clamp_min ? p.clamp_min : y;  // NaN passes through, like torch.clamp
  if (p.has_max) y = y > p.clamp_max ? p.clamp_max : y;
  return y;
}

// ---- Philox4x32-10 (Salmon et al., SC'11) -------------------------------------------------------------------
struct Philox4 {
  uint32_t v[4];
};

DUALMCMC_HD Philox4 philox4x32_10(uint64_t seed, uint64_t counter_lo, uint64_t counter_hi) {
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDACC__)
#pragma unroll
#else
#pragma GCC unroll 10  // a flat body lets GCC vectorise across Philox blocks
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += 0x9E3779B9u;  // Weyl key schedule
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Normals per Philox block: 4 in single precision (24-bit uniforms), 2 in double (53-bit uniforms).
template <typename acc_t>
struct NormalsPerBlock {
  static constexpr int value = 4;
};
template <>
struct NormalsPerBlock<double> {
  static constexpr int value = 2;
};

// Uniform in the open interval (0, 1): never 0, so log() stays finite.
DUALMCMC_HD float uniform_open_f(uint32_t r) { return static_cast<float>(r >> 8) * 5.9604644775390625e-8f + 2.98023223876953125e-8f; }
// Uniform in [0, 1), for the angle.
DUALMCMC_HD float uniform_f(uint32_t r) { return static_cast<float>(r >> 8) * 5.9604644775390625e-8f; }
DUALMCMC_HD double uniform_open_d(uint32_t hi, uint32_t lo) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(bits) * 1.1102230246251565e-16 + 5.551115123125783e-17;
}
DUALMCMC_HD double uniform_d(uint32_t hi, uint32_t lo) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return static_cast<double>(bits) * 1.1102230246251565e-16;
}

}  // namespace dualmcmc
