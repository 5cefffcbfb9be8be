// AVX2 + FMA + F16C kernels of the CPU Langevin step (kernels_avx2.cpp). The declarations are free of torch
// types: that file includes no torch header, so no inline torch function is ever compiled for AVX2 and then
// picked by the linker for a caller on a CPU without it. Each function computes exactly what the portable
// loops in langevin_cpu.cpp compute (the formulas of langevin.h, same roundings), lane for lane.
#pragma once

#include <cstdint>

#include "../langevin.h"

namespace dualmcmc::cpu::avx2 {

// Whether this build has the AVX2 kernels and the CPU runs them (AVX2, FMA and F16C).
bool supported();

// How the noise enters: none, an explicit tensor of the input dtype, or a buffer of Philox normals in the
// compute type (float for float/half/bfloat16, double for double).
enum class Noise : int { kNone = 0, kExplicit = 1, kBuffer = 2 };

// out[i] = update(x[i], grad[i], eps[i]) for i < n. out may be x itself (in place), never a partial overlap.
void update_f32(const float* x, const float* grad, const float* noise, const float* eps, float* out, int64_t n,
                const LangevinParams<float>& p, Noise mode);
void update_f64(const double* x, const double* grad, const double* noise, const double* eps, double* out, int64_t n,
                const LangevinParams<double>& p, Noise mode);
// float16 / bfloat16 as raw bits, computed in float.
void update_f16(const uint16_t* x, const uint16_t* grad, const uint16_t* noise, const float* eps, uint16_t* out,
                int64_t n, const LangevinParams<float>& p, Noise mode);
void update_bf16(const uint16_t* x, const uint16_t* grad, const uint16_t* noise, const float* eps, uint16_t* out,
                 int64_t n, const LangevinParams<float>& p, Noise mode);

// The float normals of Philox blocks first_block .. first_block + n_blocks - 1 (4 per block) into out.
void fill_normals_f32(uint64_t seed, uint64_t counter_lo, uint64_t first_block, int64_t n_blocks, float* out);

}  // namespace dualmcmc::cpu::avx2
