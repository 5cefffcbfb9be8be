// AVX2 + FMA + F16C kernels of the CPU Langevin step. Every function carries the target attribute instead of
// the file being built with -mavx2, and the file includes no torch header (see kernels_avx2.h). Each vector
// operation mirrors one rounding of langevin.h, so the results are the bits of the portable loops.
#include "kernels_avx2.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DUALMCMC_HAVE_AVX2 1
#include <immintrin.h>
#else
#define DUALMCMC_HAVE_AVX2 0
#endif

namespace dualmcmc::cpu::avx2 {

#if DUALMCMC_HAVE_AVX2

#define DUALMCMC_AVX2 __attribute__((target("avx2,fma,f16c")))
#define DUALMCMC_AVX2_INLINE __attribute__((target("avx2,fma,f16c"), always_inline)) inline

bool supported() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
}

namespace {

// ---- loads and stores of 8 elements as float (4 for double) -------------------------------------------------
struct F32 {
  using T = float;
  using A = float;
  static constexpr int W = 8;
  DUALMCMC_AVX2_INLINE static __m256 load(const float* p) { return _mm256_loadu_ps(p); }
  DUALMCMC_AVX2_INLINE static void store(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
};
struct F16 {
  using T = uint16_t;
  using A = float;
  static constexpr int W = 8;
  DUALMCMC_AVX2_INLINE static __m256 load(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  DUALMCMC_AVX2_INLINE static void store(uint16_t* p, __m256 v) {  // round to nearest even, like c10::Half
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};
struct BF16 {
  using T = uint16_t;
  using A = float;
  static constexpr int W = 8;
  DUALMCMC_AVX2_INLINE static __m256 load(const uint16_t* p) {
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  DUALMCMC_AVX2_INLINE static void store(uint16_t* p, __m256 v) {
    // c10::BFloat16: NaN -> 0x7FC0, else round to nearest even: (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    const __m256i u = _mm256_castps_si256(v);
    const __m256i bias = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)),
                                          _mm256_set1_epi32(0x7FFF));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
    const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), nan);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // qwords 0 and 2
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

// The update on one vector (langevin_update_t with the clamp always applied; an open end is +-inf).
template <bool kPrior, Noise kMode>
DUALMCMC_AVX2_INLINE __m256 update8(__m256 x, __m256 g, __m256 e, __m256 p, __m256 neg_drift, __m256 b, __m256 lo,
                                    __m256 hi) {
  const __m256 t = kPrior ? _mm256_fmadd_ps(p, x, g) : g;
  __m256 y = _mm256_fmadd_ps(neg_drift, t, x);
  if (kMode != Noise::kNone) y = _mm256_fmadd_ps(b, e, y);
  y = _mm256_max_ps(lo, y);  // lo > y ? lo : y, NaN y passes
  return _mm256_min_ps(hi, y);
}

template <typename D, bool kPrior, Noise kMode>
DUALMCMC_AVX2 void update_loop(const typename D::T* x, const typename D::T* grad, const typename D::T* noise,
                               const float* eps, typename D::T* out, int64_t n, const LangevinParams<float>& prm) {
  constexpr int W = D::W;
  const __m256 p = _mm256_set1_ps(prm.prior_precision), neg_drift = _mm256_set1_ps(-prm.drift);
  const __m256 b = _mm256_set1_ps(prm.noise_std), lo = _mm256_set1_ps(prm.clamp_min), hi = _mm256_set1_ps(prm.clamp_max);
  const __m256 zero = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const __m256 e = kMode == Noise::kExplicit ? D::load(noise + i) : kMode == Noise::kBuffer ? _mm256_loadu_ps(eps + i) : zero;
    D::store(out + i, update8<kPrior, kMode>(D::load(x + i), D::load(grad + i), e, p, neg_drift, b, lo, hi));
  }
  if (i < n) {  // the tail through one padded vector: the same operations as the body
    const int64_t r = n - i;
    typename D::T xs[W] = {}, gs[W] = {}, ns[W] = {}, os[W];
    float es[W] = {};
    for (int64_t k = 0; k < r; ++k) {
      xs[k] = x[i + k];
      gs[k] = grad[i + k];
      if (kMode == Noise::kExplicit) ns[k] = noise[i + k];
      if (kMode == Noise::kBuffer) es[k] = eps[i + k];
    }
    const __m256 e = kMode == Noise::kExplicit ? D::load(ns) : kMode == Noise::kBuffer ? _mm256_loadu_ps(es) : zero;
    D::store(os, update8<kPrior, kMode>(D::load(xs), D::load(gs), e, p, neg_drift, b, lo, hi));
    for (int64_t k = 0; k < r; ++k) out[i + k] = os[k];
  }
}

template <typename D>
DUALMCMC_AVX2 void update_any(const typename D::T* x, const typename D::T* grad, const typename D::T* noise,
                              const float* eps, typename D::T* out, int64_t n, const LangevinParams<float>& p,
                              Noise mode) {
  const bool prior = p.prior_precision != 0.0f;
  switch (mode) {
    case Noise::kNone:
      return prior ? update_loop<D, true, Noise::kNone>(x, grad, noise, eps, out, n, p)
                   : update_loop<D, false, Noise::kNone>(x, grad, noise, eps, out, n, p);
    case Noise::kExplicit:
      return prior ? update_loop<D, true, Noise::kExplicit>(x, grad, noise, eps, out, n, p)
                   : update_loop<D, false, Noise::kExplicit>(x, grad, noise, eps, out, n, p);
    case Noise::kBuffer:
      return prior ? update_loop<D, true, Noise::kBuffer>(x, grad, noise, eps, out, n, p)
                   : update_loop<D, false, Noise::kBuffer>(x, grad, noise, eps, out, n, p);
  }
}

// ---- double: 4 lanes ------------------------------------------------------------------------------------------
template <bool kPrior, Noise kMode>
DUALMCMC_AVX2_INLINE __m256d update4(__m256d x, __m256d g, __m256d e, __m256d p, __m256d neg_drift, __m256d b,
                                     __m256d lo, __m256d hi) {
  const __m256d t = kPrior ? _mm256_fmadd_pd(p, x, g) : g;
  __m256d y = _mm256_fmadd_pd(neg_drift, t, x);
  if (kMode != Noise::kNone) y = _mm256_fmadd_pd(b, e, y);
  y = _mm256_max_pd(lo, y);
  return _mm256_min_pd(hi, y);
}

template <bool kPrior, Noise kMode>
DUALMCMC_AVX2 void update_loop_f64(const double* x, const double* grad, const double* noise, const double* eps,
                                   double* out, int64_t n, const LangevinParams<double>& prm) {
  const double* e_src = kMode == Noise::kExplicit ? noise : eps;
  const __m256d p = _mm256_set1_pd(prm.prior_precision), neg_drift = _mm256_set1_pd(-prm.drift);
  const __m256d b = _mm256_set1_pd(prm.noise_std), lo = _mm256_set1_pd(prm.clamp_min), hi = _mm256_set1_pd(prm.clamp_max);
  const __m256d zero = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d e = kMode == Noise::kNone ? zero : _mm256_loadu_pd(e_src + i);
    _mm256_storeu_pd(out + i, update4<kPrior, kMode>(_mm256_loadu_pd(x + i), _mm256_loadu_pd(grad + i), e, p, neg_drift,
                                                     b, lo, hi));
  }
  if (i < n) {
    const int64_t r = n - i;
    double xs[4] = {}, gs[4] = {}, es[4] = {}, os[4];
    for (int64_t k = 0; k < r; ++k) {
      xs[k] = x[i + k];
      gs[k] = grad[i + k];
      if (kMode != Noise::kNone) es[k] = e_src[i + k];
    }
    _mm256_storeu_pd(os, update4<kPrior, kMode>(_mm256_loadu_pd(xs), _mm256_loadu_pd(gs), _mm256_loadu_pd(es), p,
                                                neg_drift, b, lo, hi));
    for (int64_t k = 0; k < r; ++k) out[i + k] = os[k];
  }
}

// ---- Philox4x32-10 on 8 blocks at once ------------------------------------------------------------------------
// The high halves of the 32x32 -> 64-bit products: _mm256_mul_epu32 multiplies the even 32-bit lanes, the odd
// lanes are shifted down for a second multiply, and the high halves are blended back into lane order. The low
// halves are one _mm256_mullo_epi32.
DUALMCMC_AVX2_INLINE __m256i mulhi(__m256i a, __m256i m) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  return _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// The 20 round keys (Weyl schedule), broadcast once per call.
struct RoundKeys {
  __m256i k0[10], k1[10];
};

DUALMCMC_AVX2_INLINE void round_keys(uint64_t seed, RoundKeys& rk) {
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    rk.k0[round] = _mm256_set1_epi32(static_cast<int>(k0));
    rk.k1[round] = _mm256_set1_epi32(static_cast<int>(k1));
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

DUALMCMC_AVX2_INLINE void philox8(const RoundKeys& rk, __m256i& c0, __m256i& c1, __m256i& c2, __m256i& c3) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
    const __m256i hi0 = mulhi(c0, m0), lo0 = _mm256_mullo_epi32(c0, m0);
    const __m256i hi1 = mulhi(c2, m1), lo1 = _mm256_mullo_epi32(c2, m1);
    c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), rk.k0[round]);
    c1 = lo1;
    c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), rk.k1[round]);
    c3 = lo0;
  }
}

// ---- the float normal transform of langevin.h, lane for lane --------------------------------------------------
DUALMCMC_AVX2_INLINE __m256 uniform_open(__m256i r) {
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r, 8)), _mm256_set1_ps(5.9604644775390625e-8f),
                         _mm256_set1_ps(2.98023223876953125e-8f));
}
DUALMCMC_AVX2_INLINE __m256 uniform(__m256i r) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r, 8)), _mm256_set1_ps(5.9604644775390625e-8f));
}

DUALMCMC_AVX2_INLINE __m256 log_unit8(__m256 u) {
  const __m256i bits = _mm256_castps_si256(u);
  __m256 e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(bits, 23), _mm256_set1_epi32(127)));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(bits, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
  const __m256 big = _mm256_cmp_ps(m, _mm256_set1_ps(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(_mm256_set1_ps(0.5f), m), big);
  e = _mm256_blendv_ps(e, _mm256_add_ps(e, _mm256_set1_ps(1.0f)), big);
  const __m256 f = _mm256_add_ps(m, _mm256_set1_ps(-1.0f));
  const __m256 z = _mm256_mul_ps(f, f);
  __m256 poly = _mm256_set1_ps(7.0376836292e-2f);
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(-1.1514610310e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(1.1676998740e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(-1.2420140846e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(1.4249322787e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(-1.6668057665e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(2.0000714765e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(-2.4999993993e-1f));
  poly = _mm256_fmadd_ps(poly, f, _mm256_set1_ps(3.3333331174e-1f));
  __m256 y = _mm256_mul_ps(_mm256_mul_ps(f, z), poly);
  y = _mm256_fmadd_ps(e, _mm256_set1_ps(-2.12194440e-4f), y);
  y = _mm256_fmadd_ps(z, _mm256_set1_ps(-0.5f), y);
  return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), _mm256_add_ps(f, y));
}

DUALMCMC_AVX2_INLINE void sincos_2pi8(__m256 t, __m256& s, __m256& c) {
  const __m256i qi = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(4.0f), t), _mm256_set1_ps(0.5f)));
  const __m256 r = _mm256_mul_ps(_mm256_add_ps(t, _mm256_mul_ps(_mm256_set1_ps(-0.25f), _mm256_cvtepi32_ps(qi))),
                                 _mm256_set1_ps(6.28318530717958647692f));
  const __m256 z = _mm256_mul_ps(r, r);
  const __m256 ps = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_set1_ps(-1.9515295891e-4f), z, _mm256_set1_ps(8.3321608736e-3f)), z,
      _mm256_set1_ps(-1.6666654611e-1f));
  const __m256 sr = _mm256_fmadd_ps(_mm256_mul_ps(r, z), ps, r);
  const __m256 pc = _mm256_fmadd_ps(
      _mm256_fmadd_ps(_mm256_set1_ps(2.443315711809948e-5f), z, _mm256_set1_ps(-1.388731625493765e-3f)), z,
      _mm256_set1_ps(4.166664568298827e-2f));
  const __m256 cr = _mm256_fmadd_ps(_mm256_mul_ps(z, z), pc, _mm256_fmadd_ps(_mm256_set1_ps(-0.5f), z, _mm256_set1_ps(1.0f)));
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2);
  const __m256 swap = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(qi, one), one));
  const __m256 s0 = _mm256_blendv_ps(sr, cr, swap), c0 = _mm256_blendv_ps(cr, sr, swap);
  const __m256i s_sign = _mm256_slli_epi32(_mm256_and_si256(qi, two), 30);                       // quadrant 2, 3
  const __m256i c_sign = _mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(qi, one), two), 30);  // quadrant 1, 2
  s = _mm256_xor_ps(s0, _mm256_castsi256_ps(s_sign));
  c = _mm256_xor_ps(c0, _mm256_castsi256_ps(c_sign));
}

}  // namespace

DUALMCMC_AVX2 void fill_normals_f32(uint64_t seed, uint64_t counter_lo, uint64_t first_block, int64_t n_blocks,
                                    float* out) {
  const __m256i lo0 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(counter_lo)));
  const __m256i lo1 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(counter_lo >> 32)));
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  RoundKeys rk;
  round_keys(seed, rk);
  for (int64_t b0 = 0; b0 < n_blocks; b0 += 8) {
    // Counter high half = block index: 8 consecutive blocks, the upper word carried per lane when it wraps.
    const uint64_t base = first_block + static_cast<uint64_t>(b0);
    __m256i c2, c3;
    if (static_cast<uint32_t>(base) <= 0xFFFFFFF8u) {
      c2 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base))), iota);
      c3 = _mm256_set1_epi32(static_cast<int>(static_cast<uint32_t>(base >> 32)));
    } else {
      alignas(32) uint32_t blo[8], bhi[8];
      for (int l = 0; l < 8; ++l) {
        blo[l] = static_cast<uint32_t>(base + static_cast<uint64_t>(l));
        bhi[l] = static_cast<uint32_t>((base + static_cast<uint64_t>(l)) >> 32);
      }
      c2 = _mm256_load_si256(reinterpret_cast<const __m256i*>(blo));
      c3 = _mm256_load_si256(reinterpret_cast<const __m256i*>(bhi));
    }
    __m256i c0 = lo0, c1 = lo1;
    philox8(rk, c0, c1, c2, c3);
    const __m256 m2 = _mm256_set1_ps(-2.0f);
    const __m256 rad0 = _mm256_sqrt_ps(_mm256_mul_ps(m2, log_unit8(uniform_open(c0))));
    const __m256 rad1 = _mm256_sqrt_ps(_mm256_mul_ps(m2, log_unit8(uniform_open(c2))));
    __m256 s0, k0, s1, k1;
    sincos_2pi8(uniform(c1), s0, k0);
    sincos_2pi8(uniform(c3), s1, k1);
    const __m256 a = _mm256_mul_ps(rad0, k0), b = _mm256_mul_ps(rad0, s0);
    const __m256 c = _mm256_mul_ps(rad1, k1), d = _mm256_mul_ps(rad1, s1);
    // 4x8 -> block-major order: a0 b0 c0 d0 a1 b1 c1 d1 ...
    const __m256 t0 = _mm256_unpacklo_ps(a, b), t1 = _mm256_unpackhi_ps(a, b);
    const __m256 t2 = _mm256_unpacklo_ps(c, d), t3 = _mm256_unpackhi_ps(c, d);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    const __m256 o0 = _mm256_permute2f128_ps(u0, u1, 0x20), o1 = _mm256_permute2f128_ps(u2, u3, 0x20);
    const __m256 o2 = _mm256_permute2f128_ps(u0, u1, 0x31), o3 = _mm256_permute2f128_ps(u2, u3, 0x31);
    float* dst = out + 4 * b0;
    if (n_blocks - b0 >= 8) {
      _mm256_storeu_ps(dst, o0);
      _mm256_storeu_ps(dst + 8, o1);
      _mm256_storeu_ps(dst + 16, o2);
      _mm256_storeu_ps(dst + 24, o3);
    } else {
      alignas(32) float tmp[32];
      _mm256_store_ps(tmp, o0);
      _mm256_store_ps(tmp + 8, o1);
      _mm256_store_ps(tmp + 16, o2);
      _mm256_store_ps(tmp + 24, o3);
      for (int64_t k = 0; k < 4 * (n_blocks - b0); ++k) dst[k] = tmp[k];
    }
  }
}

DUALMCMC_AVX2 void update_f32(const float* x, const float* grad, const float* noise, const float* eps, float* out,
                              int64_t n, const LangevinParams<float>& p, Noise mode) {
  update_any<F32>(x, grad, noise, eps, out, n, p, mode);
}
DUALMCMC_AVX2 void update_f16(const uint16_t* x, const uint16_t* grad, const uint16_t* noise, const float* eps,
                              uint16_t* out, int64_t n, const LangevinParams<float>& p, Noise mode) {
  update_any<F16>(x, grad, noise, eps, out, n, p, mode);
}
DUALMCMC_AVX2 void update_bf16(const uint16_t* x, const uint16_t* grad, const uint16_t* noise, const float* eps,
                               uint16_t* out, int64_t n, const LangevinParams<float>& p, Noise mode) {
  update_any<BF16>(x, grad, noise, eps, out, n, p, mode);
}
DUALMCMC_AVX2 void update_f64(const double* x, const double* grad, const double* noise, const double* eps, double* out,
                              int64_t n, const LangevinParams<double>& p, Noise mode) {
  const bool prior = p.prior_precision != 0.0;
  switch (mode) {
    case Noise::kNone:
      return prior ? update_loop_f64<true, Noise::kNone>(x, grad, noise, eps, out, n, p)
                   : update_loop_f64<false, Noise::kNone>(x, grad, noise, eps, out, n, p);
    case Noise::kExplicit:
      return prior ? update_loop_f64<true, Noise::kExplicit>(x, grad, noise, eps, out, n, p)
                   : update_loop_f64<false, Noise::kExplicit>(x, grad, noise, eps, out, n, p);
    case Noise::kBuffer:
      return prior ? update_loop_f64<true, Noise::kBuffer>(x, grad, noise, eps, out, n, p)
                   : update_loop_f64<false, Noise::kBuffer>(x, grad, noise, eps, out, n, p);
  }
}

#else  // not x86 with GCC/clang: no AVX2 kernels; the portable loops run

bool supported() { return false; }
void update_f32(const float*, const float*, const float*, const float*, float*, int64_t, const LangevinParams<float>&, Noise) {}
void update_f64(const double*, const double*, const double*, const double*, double*, int64_t, const LangevinParams<double>&, Noise) {}
void update_f16(const uint16_t*, const uint16_t*, const uint16_t*, const float*, uint16_t*, int64_t, const LangevinParams<float>&, Noise) {}
void update_bf16(const uint16_t*, const uint16_t*, const uint16_t*, const float*, uint16_t*, int64_t, const LangevinParams<float>&, Noise) {}
void fill_normals_f32(uint64_t, uint64_t, uint64_t, int64_t, float*) {}

#endif

}  // namespace dualmcmc::cpu::avx2
