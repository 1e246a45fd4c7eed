"""Launching Triton kernels with less host time.

``triton.JITFunction.run`` binds and specializes every argument, builds a cache key, checks the kernel's global
values and builds launch metadata on every call: on the H100 machine's CPU a launch of the selective-scan
kernels took ~120 us of host time (notes/triton_scan.md "Session 3"), as much as a small kernel's GPU time.
``CachedLaunch`` launches through Triton once per specialization and afterwards calls the compiled kernel's
launcher directly. Eager training of small models, where the host issues kernels no faster than the GPU runs
them, is where this shows.
"""
from __future__ import annotations

import functools
import math
import os
from typing import List, Sequence

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

# Set False to launch every time through Triton's JITFunction (the cached launcher is skipped).
FAST_LAUNCH = True
# Programmatic dependent launch (sm_90 and later) for the kernels built with ``CachedLaunch(fn, pdl=True)``: such a
# kernel is launched with CUDA's programmatic-stream-serialization attribute, so the GPU may start its programs
# while the kernel before it in the stream drains, and each program waits (``grid_dependency_wait``) for that
# kernel to complete before its first global memory access. The result is the same as in plain stream order; what
# can change is the gap between kernels (a decode step is ~7 short kernels per layer). Also under CUDA graph
# capture (programmatic edges). On by default; SEQMAMBA_PDL=0 turns it off. H200, in one run (BENCHMARKS.md,
# eighteenth session): 1.4B decode at batch 128 39,080 -> 40,358 tokens/s (fp32 states), 43,468 -> 45,387 (bf16),
# batch 1 597 -> 650; the selective-copying training step 79.3 -> 89.2 steps/s eager, 115.1 -> 117.5 graphed.
PROGRAMMATIC_LAUNCH = os.environ.get("SEQMAMBA_PDL", "1") not in ("", "0")
# Names of the kernels built with ``CachedLaunch(fn, pdl=True)`` (a test checks each one's compiled order).
PDL_KERNEL_NAMES: set = set()


def cdiv(a: int, b: int) -> int:
    """Ceil division on the host (triton.cdiv goes through Triton's JIT-function call machinery: ~4 us)."""
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def sm_count(device_index: int) -> int:
    """Streaming multiprocessors of a CUDA device (cached: the property query costs host time)."""
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def programmatic_launch(device: torch.device) -> bool:
    """Whether kernels built with ``pdl=True`` launch with programmatic dependent launch on this device: the switch
    is on, the device is an NVIDIA GPU of compute capability 9.0 or later (not ROCm, whose capabilities are
    numbered otherwise and whose Triton backend has no grid dependency control), and Triton is not interpreting."""
    return (PROGRAMMATIC_LAUNCH and device.type == "cuda" and torch.version.hip is None and not interpreting()
            and _capability_major(device.index if device.index is not None else torch.cuda.current_device()) >= 9)


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (TRITON_INTERPRET=1: the CPU tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def _capability_major(device_index: int) -> int:
    return torch.cuda.get_device_capability(device_index)[0]


@triton.jit
def grid_dependency_wait(PDL: tl.constexpr):
    """First statement of a kernel built with ``pdl=True``, before any global load or store. Under programmatic
    launch: wait until the kernel before this one has completed and its writes are visible, then let the kernel
    after this one start its programs (only now, so that at most the kernel just before a running one is still
    incomplete: none of them reads anything before its own wait). Nothing when PDL is False."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()


def zeroed_views(device, shapes: Sequence[Sequence[int]]) -> List[torch.Tensor]:
    """Contiguous fp32 zero tensors of the given shapes carved from one zeroed buffer (one fill launch instead of
    one per tensor; each view starts 128-byte aligned). The views keep the whole buffer alive."""
    sizes = [math.prod(shape) for shape in shapes]
    starts = [0]
    for size in sizes:
        starts.append(starts[-1] + cdiv(size, 32) * 32)
    buffer = torch.zeros(starts[-1], device=device, dtype=torch.float32)
    return [buffer[start:start + size].view(*shape) for start, size, shape in zip(starts, sizes, shapes)]


def _no_launch_hooks() -> bool:
    runtime = triton.knobs.runtime
    return all(hook is None or not getattr(hook, "calls", (hook,))
               for hook in (runtime.launch_enter_hook, runtime.launch_exit_hook))


class CachedLaunch:
    """Launches one @triton.jit kernel whose parameters are its tensors, then its scalars, then its constexprs.

    After Triton has compiled and launched a specialization, later launches of the same one call the compiled
    kernel's launcher directly. The key is finer than Triton's specialization: every scalar's value, every
    tensor's dtype and 16-byte alignment, the constexprs, num_warps, the compile options and the device. Used
    on CUDA only and only while no launch hooks (profilers) are registered; under the interpreter, and if the
    compiled kernel's launcher ever rejects the call (another Triton version), every launch goes through Triton.
    """

    # Entries past this many (one per specialization and set of scalar values, e.g. per sequence length) clear the
    # cache rather than let it grow without bound; the next launch of each goes through Triton once more.
    MAX_ENTRIES = 4096

    def __init__(self, fn, pdl: bool = False):
        self.fn = fn
        # pdl: the kernel takes a PDL constexpr and starts with ``grid_dependency_wait(PDL)``; each launch sets it
        # (and the launch attribute) by ``programmatic_launch``.
        self.pdl = pdl
        if pdl:
            PDL_KERNEL_NAMES.add(getattr(getattr(fn, "fn", fn), "__name__", repr(fn)))
        # (under TRITON_INTERPRET the kernel is an InterpretedFunction without params: no fast path there)
        self.constexpr_names = [p.name for p in getattr(fn, "params", ()) if p.is_constexpr]
        self.compiled = {}
        self.usable = bool(self.constexpr_names)

    def __call__(self, grid: Sequence[int], tensors: Sequence[torch.Tensor], scalars: tuple, constexprs: dict,
                 num_warps: int = 4, options: dict | None = None) -> None:
        options = options or {}
        device = tensors[0].device
        if self.pdl:
            enabled = programmatic_launch(device)
            constexprs = {**constexprs, "PDL": enabled}
            if enabled:
                options = {**options, "launch_pdl": True}
        key = None
        if FAST_LAUNCH and self.usable and device.type == "cuda" and _no_launch_hooks():
            values = tuple(constexprs[name] for name in self.constexpr_names)
            key = (device.index, scalars, values, num_warps, tuple(sorted(options.items())),
                   tuple((t.dtype, t.data_ptr() % 16 == 0) for t in tensors))
            kernel = self.compiled.get(key)
            if kernel is not None:
                grid = tuple(grid) + (1,) * (3 - len(grid))
                try:
                    kernel.run(grid[0], grid[1], grid[2], torch._C._cuda_getCurrentRawStream(device.index),
                               kernel.function, kernel.packed_metadata, None, None, None, *tensors, *scalars, *values)
                    return
                except (TypeError, AttributeError):  # a launcher with another calling convention: stop using it
                    self.usable, self.compiled = False, {}
                    key = None
        kernel = self.fn[tuple(grid)](*tensors, *scalars, **constexprs, num_warps=num_warps, **options)
        if key is not None and all(hasattr(kernel, name) for name in ("run", "function", "packed_metadata")):
            if len(self.compiled) >= self.MAX_ENTRIES:
                self.compiled.clear()
            self.compiled[key] = kernel
