"""Builds dualmcmc._C: the C++ kernels always, the CUDA kernels when a CUDA-enabled torch and nvcc are present.

Environment switches:
  DUALMCMC_CUDA=1   force the CUDA build (e.g. on a GPU-less build machine that has nvcc and a CUDA torch)
  DUALMCMC_CUDA=0   skip the CUDA build even when CUDA is available
  DUALMCMC_NO_EXT=1 install the pure-Python package only (dualmcmc.ops falls back to the eager reference)
  DUALMCMC_OPENMP=0 build without OpenMP (at::parallel_for then runs serially; results do not change)
  DEBUG=1           -O0 -g

OpenMP: at::parallel_for is a header template that only splits work over threads when the including file is
compiled with OpenMP (_OPENMP defined), so the extension uses the OpenMP flags of torch's own build whenever
torch was built with the OpenMP backend (torch.backends.openmp.is_available(); the Linux wheels are):
  Linux, GCC/clang:  -fopenmp; the extension's libgomp.so.1 is the copy torch ships and has already loaded
                     (same soname), so one OpenMP runtime and one thread pool;
  macOS, Apple clang: -Xpreprocessor -fopenmp against the libomp.dylib that torch ships in torch/lib, when
                     omp.h is found (torch/include, $OMP_PREFIX/include, Homebrew's libomp); otherwise the build
                     goes on without OpenMP and says so (install libomp or set OMP_PREFIX to get threads).
"""
import glob
import os
import sys

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _openmp_flags(torch):
    """(compile flags, link flags) for OpenMP as torch's own build uses it, or ([], []) with a note."""
    if os.environ.get("DUALMCMC_OPENMP", "1") == "0":
        return [], []
    if not torch.backends.openmp.is_available():
        print("dualmcmc setup: this torch has no OpenMP backend; building without OpenMP")
        return [], []
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    if sys.platform == "darwin":
        candidates = [os.path.join(os.path.dirname(torch.__file__), "include")]
        candidates += [os.path.join(p, "include") for p in (os.environ.get("OMP_PREFIX"), "/opt/homebrew/opt/libomp",
                                                            "/usr/local/opt/libomp") if p]
        inc = next((c for c in candidates if os.path.exists(os.path.join(c, "omp.h"))), None)
        if inc is None or not os.path.exists(os.path.join(torch_lib, "libomp.dylib")):
            print("dualmcmc setup: omp.h or torch's libomp.dylib not found; building without OpenMP "
                  "(set OMP_PREFIX to a libomp install to use every core)")
            return [], []
        return ["-Xpreprocessor", "-fopenmp", f"-I{inc}"], [f"-L{torch_lib}", "-lomp", f"-Wl,-rpath,{torch_lib}"]
    if sys.platform.startswith("win"):
        return ["/openmp"], []
    # The extension then needs libgomp.so.1; importing torch first has loaded torch/lib/libgomp.so.1, which the
    # loader reuses for that soname, so there is one OpenMP runtime and one thread pool.
    return ["-fopenmp"], ["-fopenmp"]


def _extensions():
    if os.environ.get("DUALMCMC_NO_EXT", "0") == "1":
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    switch = os.environ.get("DUALMCMC_CUDA", "auto")
    cuda_possible = torch.version.cuda is not None and CUDA_HOME is not None
    use_cuda = switch == "1" or (switch == "auto" and cuda_possible and torch.cuda.is_available())
    if switch == "1" and not cuda_possible:
        raise RuntimeError("DUALMCMC_CUDA=1 needs a CUDA-enabled torch and nvcc (CUDA_HOME); this torch is "
                           f"{torch.__version__} with CUDA {torch.version.cuda}, CUDA_HOME={CUDA_HOME}")
    debug = os.environ.get("DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    sources = [os.path.relpath(p, HERE) for p in sorted(glob.glob(os.path.join(HERE, "csrc", "*.cpp")))]
    sources += [os.path.relpath(p, HERE) for p in sorted(glob.glob(os.path.join(HERE, "csrc", "cpu", "*.cpp")))]
    omp_cflags, omp_ldflags = _openmp_flags(torch)
    # -ffp-contract=off: the kernels write every fused multiply-add explicitly, so the Philox normals and the
    # update are the same bits whatever the compiler or CPU (the AVX2 and portable paths are tested equal).
    cxx = opt + ["-fno-math-errno", "-ffp-contract=off", "-DPy_LIMITED_API=0x03090000"] + omp_cflags
    if use_cuda:
        sources += [os.path.relpath(p, HERE) for p in sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))]
        ext = CUDAExtension("dualmcmc._C", sources, extra_compile_args={"cxx": cxx, "nvcc": opt + ["-lineinfo"]},
                            extra_link_args=omp_ldflags, py_limited_api=True)
    else:
        ext = CppExtension("dualmcmc._C", sources, extra_compile_args={"cxx": cxx}, extra_link_args=omp_ldflags,
                           py_limited_api=True)
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = _extensions()

setup(
    name="dualmcmc",
    version="0.1.0",
    description="Learning energy-based models by MCMC teaching (Dual-MCMC, CoopVAEBM, NT-EBM) on fused Langevin operators",
    packages=find_packages(include=["dualmcmc", "dualmcmc.*"]),
    package_data={"dualmcmc": ["py.typed"]},
    python_requires=">=3.10",
    install_requires=["torch>=2.4"],
    extras_require={
        "train": ["pyyaml", "tqdm", "numpy", "matplotlib", "tensorboard", "scikit-learn", "prdc"],
        "test": ["pytest", "pyyaml", "tqdm", "numpy", "matplotlib", "tensorboard", "scikit-learn", "scipy", "prdc",
                 "zuko"],
        "flows": ["zuko"],  # model.flow: spline (NT-EBM's neural spline flow backbone)
    },
    entry_points={"console_scripts": ["dualmcmc = dualmcmc.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
