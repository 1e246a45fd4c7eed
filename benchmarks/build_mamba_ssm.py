"""Build mamba_ssm's CUDA selective scan (the baseline issue 9's ratios are against) in an ignored folder, for one
GPU architecture and only the cases the benchmarks time, so it fits inside one device call.

mamba_ssm (state-spaces/mamba, 2.3.2) is not vendored: its source is copied here into the git-ignored
``.anchor/src`` from a checkout, once, on the machine with network access::

    (cd path/to/mamba && git archive HEAD csrc/selective_scan mamba_ssm/__init__.py mamba_ssm/ops/__init__.py \\
        mamba_ssm/ops/selective_scan_interface.py mamba_ssm/ops/triton mamba_ssm/utils) | tar -x -C .anchor/src

and the device call carries ``.anchor/src`` and runs (nvcc there; ~3-5 min on 16 cores, so start it in the
background while the tests run)::

    python benchmarks/build_mamba_ssm.py            # -> .anchor/build/selective_scan_cuda*.so
    PYTHONPATH=.anchor/src:.anchor/build python benchmarks/bench_selective_scan.py

What is built, and how it differs from ``pip install mamba-ssm``: the same sources and nvcc flags as its
setup.py, for the local GPU's architecture only (sm_90 on an H200), and the kernels for bf16 / fp32 inputs with
real weights only (fp16 and complex A are never timed: their dispatch branches and template instantiations are
removed, which cuts the compile from 9 translation units to 5). The package's ``__init__`` is reduced to its
version, so importing ``mamba_ssm.ops.selective_scan_interface`` does not pull in Mamba-2 / Mamba-3 modules.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

NVCC_FLAGS = [  # mamba_ssm 2.3.2 setup.py, CUDA branch
    "-O3", "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
]
SOURCES = ["selective_scan.cpp", "selective_scan_fwd_fp32.cu", "selective_scan_fwd_bf16.cu",
           "selective_scan_bwd_fp32_real.cu", "selective_scan_bwd_bf16_real.cu"]


def _drop(pattern: str, text: str, what: str) -> str:
    new, n = re.subn(pattern, "", text, flags=re.S)
    if n != 1:
        raise SystemExit(f"build_mamba_ssm: expected one {what} in selective_scan.cpp, found {n} "
                         "(another mamba_ssm version? this script knows 2.3.2)")
    return new


def prepare(src: Path, work: Path) -> Path:
    """Copy csrc/selective_scan to ``work`` with the fp16 and complex branches removed; returns that folder."""
    csrc = src / "csrc" / "selective_scan"
    if not (csrc / "selective_scan.cpp").exists():
        raise SystemExit(f"build_mamba_ssm: {csrc}/selective_scan.cpp not found: copy mamba_ssm's source into "
                         f"{src} first (see this script's docstring)")
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(csrc, work)
    cpp = (work / "selective_scan.cpp").read_text()
    # input types: the Half branch goes, BFloat16 becomes the first test
    cpp = _drop(r"if \(ITYPE == at::ScalarType::Half\) \{.*?\} else (?=if \(ITYPE == at::ScalarType::BFloat16\))",
                cpp, "fp16 input branch")
    # weight types: the ComplexFloat branch goes (the float branch's closing brace is the next line's)
    cpp = _drop(r"\} else if \(WTYPE == at::ScalarType::ComplexFloat\) \{.*?__VA_ARGS__\(\);[ ]*\\\n[ ]*(?=\} else \{)",
                cpp, "complex weight branch")
    (work / "selective_scan.cpp").write_text(cpp)
    for name in ("selective_scan_fwd_fp32.cu", "selective_scan_fwd_bf16.cu"):
        path = work / name
        lines = [line for line in path.read_text().splitlines() if "complex_t" not in line]
        path.write_text("\n".join(lines) + "\n")
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=".anchor/src", help="mamba_ssm source (csrc/ and mamba_ssm/)")
    parser.add_argument("--build", default=".anchor/build", help="where the extension is built and placed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 4)
    parser.add_argument("--prebuilt", default=None,
                        help="an earlier build's selective_scan_cuda.so, xz-compressed (gpu_check.sh anchor-wait "
                             "returns one): unpacked into --build instead of compiling (same GPU and torch only)")
    args = parser.parse_args()
    import torch
    from torch.utils import cpp_extension

    if not torch.cuda.is_available():
        raise SystemExit("build_mamba_ssm: no CUDA device (the build targets the local GPU's architecture)")
    src, build = Path(args.src), Path(args.build)
    build.mkdir(parents=True, exist_ok=True)
    init = src / "mamba_ssm" / "__init__.py"
    version = re.search(r'__version__ = "([^"]+)"', init.read_text())
    init.write_text(f'__version__ = "{version.group(1) if version else "unknown"}"\n')
    if args.prebuilt:
        import lzma

        with lzma.open(args.prebuilt) as packed, open(build / "selective_scan_cuda.so", "wb") as out:
            shutil.copyfileobj(packed, out)
        sys.path.insert(0, str(build))
        import selective_scan_cuda  # noqa: F401  (fails here, not in the benchmark, if it does not load)
        print(f"build_mamba_ssm: selective_scan_cuda unpacked from {args.prebuilt} ({build}); mamba_ssm "
              f"{version.group(1) if version else '?'}", flush=True)
        return
    work = prepare(src, build / "csrc")
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}"
    os.environ["MAX_JOBS"] = str(args.jobs)
    t0 = time.time()
    cpp_extension.load(
        name="selective_scan_cuda", sources=[str(work / s) for s in SOURCES],
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=NVCC_FLAGS + ["-gencode", f"arch=compute_{arch},code=sm_{arch}"],
        extra_include_paths=[str(work)], build_directory=str(build), verbose=False)
    sys.path.insert(0, str(build))
    import selective_scan_cuda  # noqa: F401  (load() built it there)
    print(f"build_mamba_ssm: selective_scan_cuda for sm_{arch} built in {time.time() - t0:.0f} s "
          f"({build}); mamba_ssm {version.group(1) if version else '?'}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
