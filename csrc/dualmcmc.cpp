// The dualmcmc operator library: schemas defined once here; kernels register per dispatch key in cpu/ and cuda/.
#include <Python.h>
#include <torch/library.h>

// Importing dualmcmc._C runs the static registrations below; the module itself holds nothing.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(dualmcmc, m) {
  // x' = clamp(x - 0.5 * step_size^2 * (grad + prior_precision * x) + noise_std * eps), eps ~ N(0, I)
  m.def(
      "langevin_step(Tensor x, Tensor grad, float step_size, float noise_std, float prior_precision=0., "
      "Tensor? noise=None, Generator? generator=None, float? clamp_min=None, float? clamp_max=None) -> Tensor",
      {at::Tag::nondeterministic_seeded});
  m.def(
      "langevin_step_(Tensor(a!) x, Tensor grad, float step_size, float noise_std, float prior_precision=0., "
      "Tensor? noise=None, Generator? generator=None, float? clamp_min=None, float? clamp_max=None) -> ()",
      {at::Tag::nondeterministic_seeded});
  // Test hooks, not API: raw Philox4x32-10 words (known-answer tests), the CPU normal stream for a given
  // (seed, offset), and the CPU implementation in use ("avx2" or "portable"; pass one to switch).
  m.def("_philox4x32_10(Tensor counter, Tensor key) -> Tensor");
  m.def("_philox_normal(int seed, int offset, int n, ScalarType dtype) -> Tensor");
  m.def("_cpu_isa(str? isa=None) -> str");
}
