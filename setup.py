"""Builds dualmcmc._C: the C++ kernels always, the CUDA kernels when a CUDA-enabled torch and nvcc are present.

Environment switches:
  DUALMCMC_CUDA=1   force the CUDA build (e.g. on a GPU-less build machine that has nvcc and a CUDA torch)
  DUALMCMC_CUDA=0   skip the CUDA build even when CUDA is available
  DUALMCMC_NO_EXT=1 install the pure-Python package only (dualmcmc.ops falls back to the eager reference)
  DEBUG=1           -O0 -g
"""
import glob
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


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
    cxx = opt + ["-fno-math-errno", "-DPy_LIMITED_API=0x03090000"]
    if use_cuda:
        sources += [os.path.relpath(p, HERE) for p in sorted(glob.glob(os.path.join(HERE, "csrc", "cuda", "*.cu")))]
        ext = CUDAExtension("dualmcmc._C", sources, extra_compile_args={"cxx": cxx, "nvcc": opt + ["-lineinfo"]},
                            py_limited_api=True)
    else:
        ext = CppExtension("dualmcmc._C", sources, extra_compile_args={"cxx": cxx}, py_limited_api=True)
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
        "train": ["pyyaml", "tqdm", "numpy", "matplotlib", "tensorboard", "scikit-learn"],
        "test": ["pytest", "pyyaml", "tqdm", "numpy", "matplotlib", "tensorboard", "scikit-learn", "scipy"],
    },
    entry_points={"console_scripts": ["dualmcmc = dualmcmc.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    options={"bdist_wheel": {"py_limited_api": "cp39"}} if ext_modules else {},
)
