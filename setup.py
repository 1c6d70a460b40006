"""Build of lthgan's compiled core, ``lthgan._C``.

CUDA sources are compiled whenever nvcc and a CUDA build of torch are present (set
``LTHGAN_CUDA=0`` to force a CPU-only build, ``LTHGAN_CUDA=1`` to require CUDA).
Targets: sm_80 and sm_90 by default (``TORCH_CUDA_ARCH_LIST`` overrides).
"""
from __future__ import annotations

import glob
import os
import sys
from pathlib import Path

from setuptools import setup


def _pick_cuda_home() -> None:
    # torch guesses CUDA_HOME from `which nvcc`; with nvcc in /usr/local/bin that gives
    # /usr/local, which holds no libcudart. Prefer a toolkit folder that has the libraries.
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for cand in ("/usr/local/cuda", "/opt/cuda"):
        if any((Path(cand) / lib / "libcudart.so").exists() for lib in ("lib64", "lib")):
            os.environ["CUDA_HOME"] = cand
            return


_pick_cuda_home()

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

ROOT = Path(__file__).parent.resolve()


def _want_cuda() -> bool:
    flag = os.environ.get("LTHGAN_CUDA", "auto").lower()
    available = torch.version.cuda is not None and CUDA_HOME is not None
    if flag in ("0", "false", "no", "off"):
        return False
    if flag in ("1", "true", "yes", "on"):
        if not available:
            sys.exit("LTHGAN_CUDA=1 but nvcc or a CUDA build of torch is missing "
                     f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={CUDA_HOME})")
        return True
    return available


def _nvidia_includes() -> list[str]:
    # cuSPARSE/cuBLAS headers that torch's CUDA headers include live in the nvidia wheels.
    out = []
    for sp in {p for p in sys.path if p.endswith("site-packages")} | {str(Path(torch.__file__).parents[1])}:
        for sub in ("nvidia/cu13/include", "nvidia/cu12/include"):
            d = Path(sp) / sub
            if d.is_dir():
                out.append(str(d))
        out += sorted(glob.glob(str(Path(sp) / "nvidia" / "*" / "include")))
    return sorted(set(out))


def extensions():
    with_cuda = _want_cuda()
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "autograd").glob("*.cpp"))
    # -fopenmp: at::parallel_for is a header template whose `#pragma omp parallel` is compiled
    # into this extension; without the flag every CPU kernel silently runs on one thread. The
    # link flag resolves to the libgomp.so.1 that torch has already loaded.
    cxx = ["-O3", "-std=c++20", "-DLTHGAN_PYTHON_MODULE", "-fopenmp"]
    link = ["-fopenmp"]
    if not os.environ.get("LTHGAN_NATIVE", ""):
        cxx.append("-fno-math-errno")
    define = []
    if with_cuda:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        cxx.append("-DLTHGAN_WITH_CUDA")
        nvcc = ["-O3", "-DLTHGAN_WITH_CUDA", "-std=c++20", "--expt-relaxed-constexpr",
                "-lineinfo"]
        return [CUDAExtension(
            "lthgan._C", sources,
            include_dirs=_nvidia_includes(),
            extra_compile_args={"cxx": cxx, "nvcc": nvcc},
            extra_link_args=link,
            define_macros=define,
        )]
    return [CppExtension("lthgan._C", sources, extra_compile_args={"cxx": cxx},
                         extra_link_args=link)]


setup(
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
