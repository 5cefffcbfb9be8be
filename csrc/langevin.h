// The Langevin update and the counter-based normal noise it adds, shared by the CPU and CUDA kernels.
//
//   x' = clamp(x - 0.5 * a^2 * (grad + p * x) + b * eps),   eps ~ N(0, 1)
//
// Noise: element i belongs to Philox block j = i / kNormalsPerBlock(T). Block j is Philox4x32-10 with
// key = seed and counter = (offset / 4 in the low 64 bits, j in the high 64 bits), the layout curand_init(seed,
// subsequence = j, offset) uses, so the op honours torch's CUDA offset bookkeeping (it reserves 4 per call).
// The value of element i depends only on (seed, offset, i): not on threads, tiles, grid size or strides.
// float/half/bfloat16 (normals in float): the 4 words of block j give elements 4j..4j+3 by Box-Muller,
// (w0, w1) -> r0 cos, r0 sin and (w2, w3) -> r1 cos, r1 sin, with r = sqrt(-2 ln u), the log and sincos below;
// every rounding is explicit, so these are the same bits on every CPU path and on CUDA.
// double: words (w0 w1) and (w2 w3) are two 53-bit uniforms giving elements 2j, 2j+1 by Box-Muller with the
// platform's log/cos/sin (CPU and CUDA agree to about 1 ulp, not bit for bit).
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

// ---- exactly rounded arithmetic ------------------------------------------------------------------------------
// Every multiply-add of the update and of the normals is written as one of these, so no compiler contracts or
// splits them differently: the AVX2 kernels (cpu/kernels_avx2.cpp), the portable CPU loop and the CUDA kernel
// compute the same bits. (CPU sources are built with -ffp-contract=off; nvcc contracts a*b+c unless told with
// the _rn intrinsics.)
#if defined(__CUDA_ARCH__)
DUALMCMC_HD float mul_rn(float a, float b) { return __fmul_rn(a, b); }
DUALMCMC_HD float add_rn(float a, float b) { return __fadd_rn(a, b); }
DUALMCMC_HD float fma_rn(float a, float b, float c) { return __fmaf_rn(a, b, c); }
DUALMCMC_HD double mul_rn(double a, double b) { return __dmul_rn(a, b); }
DUALMCMC_HD double add_rn(double a, double b) { return __dadd_rn(a, b); }
DUALMCMC_HD double fma_rn(double a, double b, double c) { return __fma_rn(a, b, c); }
DUALMCMC_HD float sqrt_rn(float a) { return __fsqrt_rn(a); }
#else
DUALMCMC_HD float mul_rn(float a, float b) { return a * b; }
DUALMCMC_HD float add_rn(float a, float b) { return a + b; }
DUALMCMC_HD float fma_rn(float a, float b, float c) { return __builtin_fmaf(a, b, c); }
DUALMCMC_HD double mul_rn(double a, double b) { return a * b; }
DUALMCMC_HD double add_rn(double a, double b) { return a + b; }
DUALMCMC_HD double fma_rn(double a, double b, double c) { return __builtin_fma(a, b, c); }
DUALMCMC_HD float sqrt_rn(float a) { return __builtin_sqrtf(a); }
#endif

// The update, the definition every kernel follows:
//   t = prior ? fma(p, x, grad) : grad;   y = fma(-drift, t, x);   y = fma(b, eps, y) (with noise);
//   y = y < lo ? lo : y;   y = y > hi ? hi : y   (NaN passes through, like torch.clamp)
// The flags are template parameters so that CPU loops carry no loop-invariant branch.
template <typename acc_t, bool kPrior, bool kNoise, bool kMin, bool kMax>
DUALMCMC_HD acc_t langevin_update_t(acc_t x, acc_t grad, acc_t eps, const LangevinParams<acc_t>& p) {
  const acc_t t = kPrior ? fma_rn(p.prior_precision, x, grad) : grad;
  acc_t y = fma_rn(-p.drift, t, x);
  if (kNoise) y = fma_rn(p.noise_std, eps, y);
  if (kMin) y = y < p.clamp_min ? p.clamp_min : y;
  if (kMax) y = y > p.clamp_max ? p.clamp_max : y;
  return y;
}

// Same, with the flags read at run time (CUDA: they are uniform over a launch, so the branches cost nothing).
template <typename acc_t>
DUALMCMC_HD acc_t langevin_update(acc_t x, acc_t grad, acc_t eps, bool noise, const LangevinParams<acc_t>& p) {
  const acc_t t = p.prior_precision != acc_t(0) ? fma_rn(p.prior_precision, x, grad) : grad;
  acc_t y = fma_rn(-p.drift, t, x);
  if (noise) y = fma_rn(p.noise_std, eps, y);
  if (p.has_min) y = y < p.clamp_min ? p.clamp_min : y;
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
#pragma GCC unroll 10
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

// Uniform in the open interval (0, 1): never 0, so log() stays finite. Both conversions are exact.
DUALMCMC_HD float uniform_open_f(uint32_t r) { return fma_rn(static_cast<float>(r >> 8), 5.9604644775390625e-8f, 2.98023223876953125e-8f); }
// Uniform in [0, 1), for the angle.
DUALMCMC_HD float uniform_f(uint32_t r) { return mul_rn(static_cast<float>(r >> 8), 5.9604644775390625e-8f); }
DUALMCMC_HD double uniform_open_d(uint32_t hi, uint32_t lo) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return fma_rn(static_cast<double>(bits), 1.1102230246251565e-16, 5.551115123125783e-17);
}
DUALMCMC_HD double uniform_d(uint32_t hi, uint32_t lo) {
  const uint64_t bits = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return mul_rn(static_cast<double>(bits), 1.1102230246251565e-16);
}

// ---- float normals: Box-Muller with a fixed polynomial log and sincos -----------------------------------------
// Written once here, with every rounding explicit, and mirrored lane for lane by the AVX2 kernel; the CUDA kernel
// calls these same functions. So a float normal is the same bits on any CPU and on CUDA.
DUALMCMC_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t b;
  __builtin_memcpy(&b, &f, sizeof b);
  return b;
#endif
}
DUALMCMC_HD float bits_float(uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float f;
  __builtin_memcpy(&f, &b, sizeof f);
  return f;
#endif
}

// ln(u) for u in (0, 1] (normal floats): exponent split, mantissa in [sqrt(1/2), sqrt(2)), minimax polynomial
// (Cephes single-precision coefficients), about 1 ulp.
DUALMCMC_HD float log_unit(float u) {
  const uint32_t bits = float_bits(u);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  float m = bits_float((bits & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? mul_rn(0.5f, m) : m;  // exact
  e = big ? add_rn(e, 1.0f) : e;  // exact
  const float f = add_rn(m, -1.0f);  // exact
  const float z = mul_rn(f, f);
  float poly = 7.0376836292e-2f;
  poly = fma_rn(poly, f, -1.1514610310e-1f);
  poly = fma_rn(poly, f, 1.1676998740e-1f);
  poly = fma_rn(poly, f, -1.2420140846e-1f);
  poly = fma_rn(poly, f, 1.4249322787e-1f);
  poly = fma_rn(poly, f, -1.6668057665e-1f);
  poly = fma_rn(poly, f, 2.0000714765e-1f);
  poly = fma_rn(poly, f, -2.4999993993e-1f);
  poly = fma_rn(poly, f, 3.3333331174e-1f);
  float y = mul_rn(mul_rn(f, z), poly);
  y = fma_rn(e, -2.12194440e-4f, y);  // ln 2 split in two
  y = fma_rn(z, -0.5f, y);
  return fma_rn(e, 0.693359375f, add_rn(f, y));
}

// sin and cos of 2*pi*t for t in [0, 1): quadrant q = round(4t), r = 2*pi*(t - q/4) in [-pi/4, pi/4].
DUALMCMC_HD void sincos_2pi(float t, float& s, float& c) {
  const int32_t qi = static_cast<int32_t>(add_rn(mul_rn(4.0f, t), 0.5f));  // 0..4
  const float r = mul_rn(add_rn(t, mul_rn(-0.25f, static_cast<float>(qi))), 6.28318530717958647692f);  // t - q/4 exact
  const float z = mul_rn(r, r);
  const float ps = fma_rn(fma_rn(-1.9515295891e-4f, z, 8.3321608736e-3f), z, -1.6666654611e-1f);
  const float sr = fma_rn(mul_rn(r, z), ps, r);
  const float pc = fma_rn(fma_rn(2.443315711809948e-5f, z, -1.388731625493765e-3f), z, 4.166664568298827e-2f);
  const float cr = fma_rn(mul_rn(z, z), pc, fma_rn(-0.5f, z, 1.0f));
  const int32_t quadrant = qi & 3;
  const bool swap = quadrant & 1;
  const float s0 = swap ? cr : sr, c0 = swap ? sr : cr;
  s = (quadrant & 2) ? -s0 : s0;
  c = (quadrant == 1 || quadrant == 2) ? -c0 : c0;
}

// The 4 float normals of Philox block `block`: (r0, r1) -> (rad0 cos, rad0 sin), (r2, r3) -> (rad1 cos, rad1 sin).
DUALMCMC_HD void block_normals_f(uint64_t seed, uint64_t counter_lo, uint64_t block, float z[4]) {
  const Philox4 r = philox4x32_10(seed, counter_lo, block);
  const float rad0 = sqrt_rn(mul_rn(-2.0f, log_unit(uniform_open_f(r.v[0]))));
  const float rad1 = sqrt_rn(mul_rn(-2.0f, log_unit(uniform_open_f(r.v[2]))));
  float s0, c0, s1, c1;
  sincos_2pi(uniform_f(r.v[1]), s0, c0);
  sincos_2pi(uniform_f(r.v[3]), s1, c1);
  z[0] = mul_rn(rad0, c0);
  z[1] = mul_rn(rad0, s0);
  z[2] = mul_rn(rad1, c1);
  z[3] = mul_rn(rad1, s1);
}

}  // namespace dualmcmc
