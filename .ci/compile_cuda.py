"""Compile every csrc/cuda/*.cu with nvcc against the installed torch's headers (compile only, no link).

CI machines have nvcc but no GPU, and often a CPU-only torch, so setup.py builds no CUDA there; this keeps the
CUDA sources from rotting unseen. Usage: python .ci/compile_cuda.py [--arch sm_90]
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from torch.utils.cpp_extension import include_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Headers that CMake generates for CUDA builds of torch and that a CPU-only wheel lacks: (path, contents as a
# CUDA build of torch generates them).
_GENERATED_HEADERS = {
    "c10/cuda/impl/cuda_cmake_macros.h": "#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n",
}


def _generated_header_shims(tmp: str) -> list[str]:
    shim_root = os.path.join(tmp, "shim_include")
    made = []
    for rel, text in _GENERATED_HEADERS.items():
        if any(os.path.exists(os.path.join(p, rel)) for p in include_paths()):
            continue
        path = os.path.join(shim_root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        made.append(rel)
    if made:
        print("compile_cuda: this torch has no CUDA build headers; shimmed", ", ".join(made))
    return [f"-I{shim_root}"] if made else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="sm_90", help="GPU architecture to compile for (H100/H200: sm_90)")
    parser.add_argument("--if-nvcc", action="store_true", help="exit 0 with a note when nvcc is absent")
    args = parser.parse_args()
    nvcc = shutil.which("nvcc") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")
    if not os.path.exists(nvcc):
        print("compile_cuda: nvcc not found (set CUDA_HOME or put nvcc on PATH)", file=sys.stderr)
        return 0 if args.if_nvcc else 2
    import torch

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    includes = [f"-I{p}" for p in include_paths()] + [f"-I{sysconfig.get_paths()['include']}"]
    sources = sorted(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    if not sources:
        print("compile_cuda: no .cu sources found", file=sys.stderr)
        return 2
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        includes += _generated_header_shims(tmp)
        for src in sources:
            cmd = [nvcc, "-c", src, "-o", os.path.join(tmp, os.path.basename(src) + ".o"), "-std=c++20", "-O3",
                   f"-arch={args.arch}", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTORCH_EXTENSION_NAME=_C",
                   "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
                   "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", *includes]
            print("compile_cuda:", os.path.relpath(src, ROOT), flush=True)
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                failed += 1
                print(result.stdout + result.stderr, file=sys.stderr)
            elif "warning" in (result.stdout + result.stderr).lower():
                print(result.stdout + result.stderr)
    print(f"compile_cuda: {len(sources) - failed} of {len(sources)} CUDA sources compiled")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
