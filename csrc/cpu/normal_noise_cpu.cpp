// Box-Muller on Philox4x32-10, written so that GCC vectorises the float path (branch-free polynomial log and
// sincos, lanes in plain arrays) and compiled for AVX-512, AVX2 and baseline x86-64 (chosen by CPU features at load time).
#include "normal_noise_cpu.h"

#include <cmath>
#include <cstring>

#include "../langevin.h"

namespace dualmcmc::cpu {
namespace {

constexpr int kLanes = 16;  // Philox blocks generated together; one AVX-512 register of uint32

DUALMCMC_HD float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}
DUALMCMC_HD uint32_t float_to_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// Natural log for u in (0, 1]: exponent split, mantissa in [sqrt(1/2), sqrt(2)), minimax polynomial (Cephes
// single-precision coefficients), about 1 ulp.
DUALMCMC_HD float log_open_unit(float u) {
  const uint32_t bits = float_to_bits(u);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 127);
  float m = bits_to_float((bits & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  const bool big = m > 1.41421356f;
  m = big ? 0.5f * m : m;
  e = big ? e + 1.0f : e;
  const float f = m - 1.0f;
  const float z = f * f;
  float poly = 7.0376836292e-2f;
  poly = poly * f - 1.1514610310e-1f;
  poly = poly * f + 1.1676998740e-1f;
  poly = poly * f - 1.2420140846e-1f;
  poly = poly * f + 1.4249322787e-1f;
  poly = poly * f - 1.6668057665e-1f;
  poly = poly * f + 2.0000714765e-1f;
  poly = poly * f - 2.4999993993e-1f;
  poly = poly * f + 3.3333331174e-1f;
  float y = f * z * poly;
  y += -2.12194440e-4f * e;  // ln 2 split in two for accuracy
  y += -0.5f * z;
  return f + y + 0.693359375f * e;
}

// sin and cos of 2*pi*t for t in [0, 1): quadrant from round(4t), polynomials on [-pi/4, pi/4].
DUALMCMC_HD void sincos_2pi(float t, float& s, float& c) {
  const float q = static_cast<float>(static_cast<int32_t>(4.0f * t + 0.5f));  // round(4t) in 0..4, t >= 0
  const float r = (t - 0.25f * q) * 6.28318530717958647692f;
  const float z = r * r;
  const float sr = r + r * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
  const float cr = ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f) * z * z - 0.5f * z + 1.0f;
  const int quadrant = static_cast<int>(q) & 3;
  const bool swap = quadrant & 1;
  const float s0 = swap ? cr : sr, c0 = swap ? sr : cr;
  s = (quadrant == 2 || quadrant == 3) ? -s0 : s0;
  c = (quadrant == 1 || quadrant == 2) ? -c0 : c0;
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void fill_normals(uint64_t seed, uint64_t first_block, int64_t n_blocks, float* out) {
  for (int64_t b0 = 0; b0 < n_blocks; b0 += kLanes) {
    float z0[kLanes], z1[kLanes], z2[kLanes], z3[kLanes];
    for (int l = 0; l < kLanes; ++l) {
      const Philox4 r = philox4x32_10(seed, 0, first_block + static_cast<uint64_t>(b0 + l));
      const float rad0 = std::sqrt(-2.0f * log_open_unit(uniform_open_f(r.v[0])));
      const float rad1 = std::sqrt(-2.0f * log_open_unit(uniform_open_f(r.v[2])));
      float s0, c0, s1, c1;
      sincos_2pi(uniform_f(r.v[1]), s0, c0);
      sincos_2pi(uniform_f(r.v[3]), s1, c1);
      z0[l] = rad0 * c0;
      z1[l] = rad0 * s0;
      z2[l] = rad1 * c1;
      z3[l] = rad1 * s1;
    }
    const int64_t lanes = n_blocks - b0 < kLanes ? n_blocks - b0 : kLanes;
    float* dst = out + 4 * b0;
    for (int64_t l = 0; l < lanes; ++l) {
      dst[4 * l + 0] = z0[l];
      dst[4 * l + 1] = z1[l];
      dst[4 * l + 2] = z2[l];
      dst[4 * l + 3] = z3[l];
    }
  }
}

void fill_normals(uint64_t seed, uint64_t first_block, int64_t n_blocks, double* out) {
  constexpr double kTwoPi = 6.283185307179586476925;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const Philox4 r = philox4x32_10(seed, 0, first_block + static_cast<uint64_t>(b));
    const double rad = std::sqrt(-2.0 * std::log(uniform_open_d(r.v[0], r.v[1])));
    const double angle = kTwoPi * uniform_d(r.v[2], r.v[3]);
    out[2 * b + 0] = rad * std::cos(angle);
    out[2 * b + 1] = rad * std::sin(angle);
  }
}

}  // namespace dualmcmc::cpu
