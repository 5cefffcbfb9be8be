// Philox normal noise on the CPU, vectorisable: fills out[0 .. per_block*n_blocks) with the normals of blocks
// first_block .. first_block+n_blocks-1 of the stream defined in langevin.h (counter offset 0).
#pragma once

#include <cstdint>

namespace dualmcmc::cpu {

void fill_normals(uint64_t seed, uint64_t first_block, int64_t n_blocks, float* out);
void fill_normals(uint64_t seed, uint64_t first_block, int64_t n_blocks, double* out);

}  // namespace dualmcmc::cpu
