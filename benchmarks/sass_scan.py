"""The selective scan's Triton kernels compiled for a GPU architecture on any machine (no GPU needed), and what
their SASS says: registers, spills, and the instructions of the loop over state components per state element.

Triton compiles for a target without a device (``triton.compile`` with a ``GPUTarget``), and its wheel carries
``ptxas`` and ``cuobjdump``. The kernels are specialised as a real launch at (8, 1536, 4096) bf16 specialises them
(contiguous (batch, dim, L) inputs, stride-1 time axis, sizes divisible by 16, time-varying B / C, D / z /
delta_bias / softplus), so the numbers match the GPU's (Nsight Compute on the H200: the forward at 126 registers,
546 M warp instructions = 21.7 per state element over the whole kernel, of which ~17 in the loop counted here).
The loop body is the innermost backward branch's range; per state element = its instructions x 32 lanes x
num_warps / (BLOCK_D x T).

    python benchmarks/sass_scan.py                        # forward and backward at the default configs
    python benchmarks/sass_scan.py --kernel fwd --block-d 2 --T 256 --maxnreg 96 --histogram
    python benchmarks/sass_scan.py --kernel fwd --sass fwd.sass   # the whole SASS to a file

Instruction counts are a proxy (issue slots), not a timing: registers decide occupancy, and latency is not seen.
Use it to compare variants of a kernel before spending GPU time on them.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from seqmamba.ops.selective_scan import gluon_kernels  # noqa: E402
from seqmamba.ops.selective_scan import lane_kernels  # noqa: E402
from seqmamba.ops.selective_scan import triton_kernels as kernels  # noqa: E402
from seqmamba.ops.selective_scan import triton_launch  # noqa: E402

KERNELS = {"fwd": kernels._selective_scan_fwd_kernel, "bwd": kernels._selective_scan_bwd_kernel,
           "dstate": kernels._selective_scan_dstate_kernel, "lanes_fwd": lane_kernels._selective_scan_fwd_lanes_kernel,
           "lanes_ends": lane_kernels._segment_end_states_lanes_kernel}
if gluon_kernels.AVAILABLE:  # the inference forward in Gluon (FWD_CONFIG gluon)
    KERNELS["gluon_fwd"] = gluon_kernels._selective_scan_fwd_gluon
# fp32 pointers; every other pointer is a bf16 sequence tensor
FP32_POINTERS = {"A_ptr", "D_ptr", "dbias_ptr", "state_ptr", "chunk_states_ptr", "dstate_ptr", "dA_ptr", "dB_ptr",
                 "dC_ptr", "dD_ptr", "ddbias_ptr", "state_in_ptr", "last_ptr", "seg_h_ptr", "seg_dsum_ptr"}
ONE = {"s_u_l", "s_dt_l", "s_z_l", "s_B_l", "s_C_l", "s_o_l", "s_A_n", "s_do_l", "s_du_l", "s_ddt_l", "s_dz_l"}
NOT_DIVISIBLE = {"n_chunks"}  # 8 at (8, 1536, 4096) with 512-step chunks; Triton specialises 16 | value only


def compile_kernel(name: str, block_d: int, T: int, num_warps: int, maxnreg=None, prefetch=False, arch: int = 90,
                   seq_dtype: str = "bf16", ones=(), not_divisible=NOT_DIVISIBLE, **constexprs):
    """Compiles one kernel for sm_<arch> as a launch at (8, 1536, 4096) bf16 would specialise it: pointers 16-byte
    aligned, integers divisible by 16 except ``not_divisible``, the time strides and ``ones`` equal to 1 (Triton
    makes an integer argument equal to 1 a constant); ``seq_dtype`` for the sequence tensors."""
    fn = KERNELS[name]
    values = dict(BLOCK_D=block_d, T=T, HAS_D=True, HAS_Z=True, HAS_DBIAS=True, SOFTPLUS=True, B_VAR=True,
                  C_VAR=True, SAVE_STATES=False, SAVES_PER_CHUNK=1, MASKED_LAST=True, PREFETCH=prefetch,
                  FAST_FLIP=False, WARPS=num_warps, BC_PAIRS=False, N=16, TC=4, T_SAVE=256,
                  HAS_INIT=False, FAST_MATH=False, SEQ_PAIRS=False, SPLIT=False, PDL=False, FAST_SOFTPLUS=False,
                  BATCH_FASTEST=False)
    values.update(constexprs)
    signature, constants, attrs = {}, {}, {}
    for i, (arg, param) in enumerate(zip(fn.arg_names, fn.params)):
        if param.is_constexpr:
            signature[arg] = "constexpr"
            constants[arg] = values[arg]
        elif arg in ONE or arg == "n_saved" or arg in ones:  # Triton specialises an integer equal to 1
            signature[arg] = "constexpr"
            constants[arg] = 1
        elif arg.endswith("_ptr"):
            signature[arg] = "*fp32" if arg in FP32_POINTERS else "*" + seq_dtype
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[arg] = "i32"
            if arg not in not_divisible:
                attrs[(i,)] = [["tt.divisibility", 16]]
    options = dict(num_warps=num_warps)
    if maxnreg:
        options["maxnreg"] = maxnreg
    source = ASTSource
    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource as source
    return triton.compile(source(fn, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                          options=options)


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def sass_and_resources(compiled):
    """(SASS text, registers per thread, stack bytes per thread) of a compiled kernel (Triton's cuobjdump)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        sass = subprocess.run([_tool("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([_tool("cuobjdump"), "-res-usage", path], capture_output=True, text=True,
                             check=True).stdout
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    stack = int(re.search(r"STACK:(\d+)", res).group(1))
    return sass, regs, stack


_LINE = re.compile(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z0-9_.]+)")


def innermost_loop(sass: str, longest: bool = False):
    """Opcodes (without modifiers) of the innermost loop: the shortest range closed by a backward branch (with
    ``longest``, the longest: a kernel's main loop where a short loop precedes it, as the split forward's carry)."""
    lines = []
    for line in sass.splitlines():
        m = _LINE.match(line)
        if m:
            lines.append((int(m.group(1), 16), m.group(2).split(".")[0], line))
    best = None
    for addr, _, line in lines:
        m = re.search(r"BRA (0x[0-9a-f]+)", line)
        if m and int(m.group(1), 16) < addr:
            span = (int(m.group(1), 16), addr)
            if best is None or (span[1] - span[0] > best[1] - best[0]) == longest:
                best = span
    if best is None:
        return collections.Counter()
    return collections.Counter(op for addr, op, _ in lines if best[0] <= addr <= best[1])


def report(name, block_d, T, num_warps, maxnreg=None, prefetch=False, histogram=False, sass_path=None, **kw):
    compiled = compile_kernel(name, block_d, T, num_warps, maxnreg, prefetch, **kw)
    sass, regs, stack = sass_and_resources(compiled)
    if sass_path:
        with open(sass_path, "w") as f:
            f.write(sass)
    loop = innermost_loop(sass)
    total = sum(loop.values())
    per_element = total * 32 * num_warps / (block_d * T)
    if name == "lanes_fwd":
        per_element = lanes_per_element(loop, kw)
    row = dict(kernel=name, block_d=block_d, T=T, num_warps=num_warps, maxnreg=maxnreg, prefetch=prefetch,
               registers=regs, stack=stack, loop_instructions=total, per_state_element=per_element,
               histogram=dict(loop.most_common()))
    line = (f"{name:6s} BLOCK_D {block_d} T {T:4d} warps {num_warps} maxnreg {str(maxnreg):4s} prefetch "
            f"{int(bool(prefetch))}: {regs:3d} registers, {stack:3d} B stack; loop {total} instructions = "
            f"{per_element:.1f} per state element")
    print(line)
    if histogram:
        print("   " + ", ".join(f"{op} {k}" for op, k in loop.most_common()))
    return row


# The specialisations triton_launch._fast_flip_ok lets through, as compiled by compile_kernel's keywords.
FAST_FLIP_VARIANTS = [
    ("bwd", {}), ("bwd", {"ones": ["G_B", "G_C"]}), ("bwd", {"not_divisible": []}),
    ("bwd", {"HAS_Z": False, "HAS_D": False, "seq_dtype": "fp16"}), ("bwd", {"B_VAR": False, "C_VAR": False}),
    ("dstate", {}), ("dstate", {"HAS_Z": False, "C_VAR": False}),
]


def inline_asm_layouts(ttgir: str):
    """(shape, layout definition) of every tt.elementwise_inline_asm result in a TTGIR module."""
    aliases = dict(re.findall(r"^(#\w+) = (#ttg\.blocked<\{.*\}>)", ttgir, flags=re.M))
    found = re.findall(r"tt\.elementwise_inline_asm .* -> tensor<([0-9x]+)x\w+, (#\w+)>", ttgir)
    return [(shape, aliases.get(alias, alias)) for shape, alias in found]


def fast_flip_report(variants=FAST_FLIP_VARIANTS):
    """Per variant and fast-flip mode (1: flips, 2: flips and the one-step shift): the layouts of every inline asm
    operand, and the loop's SHFL count against the plain kernel's (what tests/test_triton_ops.py checks)."""
    rows = []
    for name, variant in variants:
        kw = dict(maxnreg=168 if name == "bwd" else None, prefetch=name == "bwd", **variant)
        plain = innermost_loop(sass_and_resources(compile_kernel(name, 1, 256, 1, FAST_FLIP=0, **kw))[0])
        for mode in (1, 2):
            fast = compile_kernel(name, 1, 256, 1, FAST_FLIP=mode, **kw)
            rows.append(dict(kernel=name, variant=variant, mode=mode,
                             layouts=inline_asm_layouts(fast.asm["ttgir"]),
                             loop_shuffles=innermost_loop(sass_and_resources(fast)[0]).get("SHFL", 0),
                             loop_shuffles_plain=plain.get("SHFL", 0)))
    return rows


# The Gluon forward's specialisations (compile_kernel keywords) against the Triton forward compiled alike.
GLUON_VARIANTS = [
    dict(T=512, num_warps=1), dict(T=512, num_warps=1, maxnreg=96), dict(T=1024, num_warps=2),
    dict(T=256, num_warps=1, HAS_Z=False, HAS_D=False, HAS_DBIAS=False, SOFTPLUS=False),
    dict(T=512, num_warps=1, seq_dtype="fp32"), dict(T=512, num_warps=1, not_divisible=["n_chunks", "L"]),
    dict(T=512, num_warps=1, SAVE_STATES=True, SAVES_PER_CHUNK=2),  # the training forward
    # B / C read as int32 pairs of bf16 steps (_bf16_pairs_ok): the launch's bf16 cases
    dict(T=512, num_warps=1, BC_PAIRS=True), dict(T=512, num_warps=1, maxnreg=96, BC_PAIRS=True),
    dict(T=1024, num_warps=2, BC_PAIRS=True), dict(T=512, num_warps=1, SAVE_STATES=True, SAVES_PER_CHUNK=2,
                                                   BC_PAIRS=True),
]


# The lanes forward's specialisations (FWD_CONFIG lanes: one channel per lane); the default launch is the last
# (fast math, bf16 B / C and u / delta / z as int32 pairs, 8-step chunks).
LANES_VARIANTS = [
    dict(), dict(SAVE_STATES=True), dict(HAS_Z=False, HAS_D=False, HAS_DBIAS=False, SOFTPLUS=False),
    dict(seq_dtype="fp32", B_VAR=False, C_VAR=False, HAS_INIT=True, N=8), dict(FAST_MATH=True),
    dict(FAST_MATH=True, BC_PAIRS=True), dict(FAST_MATH=True, BC_PAIRS=True, maxnreg=200),  # lanes_maxnreg
    dict(FAST_MATH=True, BC_PAIRS=True, TC=2),  # lanes_chunk 2
    dict(FAST_MATH=True, BC_PAIRS=True, SEQ_PAIRS=True, TC=8),  # lanes_seq_pairs, lanes_chunk 8
    dict(FAST_MATH=2, BC_PAIRS=True, SEQ_PAIRS=True, TC=8),  # the default: and lanes_fast_math "one_mufu"
]


def lanes_per_element(loop, kw) -> float:
    """The lanes kernel's loop instructions per state element: an iteration is TC steps of all N components on
    each of the warp's 32 lanes (compile_kernel's TC / N unless ``kw`` sets them)."""
    return sum(loop.values()) / (kw.get("TC", 4) * kw.get("N", 16))


def lanes_report(variants=LANES_VARIANTS):
    """Per variant: registers, stack (spills), the loop's instructions per state element, its SHFL and shared-memory
    instructions (the layout puts a channel's whole chunk in one lane: there should be none)."""
    rows = []
    for variant in variants:
        kw = dict(variant)
        sass, regs, stack = sass_and_resources(compile_kernel("lanes_fwd", 32, 4, 1, **kw))
        loop = innermost_loop(sass)
        rows.append(dict(variant=variant, registers=regs, stack=stack, shuffles=loop.get("SHFL", 0),
                         mufu_per_element=loop.get("MUFU", 0) / (kw.get("TC", 4) * kw.get("N", 16)),
                         shared=sum(k for op, k in loop.items() if op in ("LDS", "STS", "LDSM", "BAR")),
                         per_element=lanes_per_element(loop, kw)))
    return rows


def lanes_split_report(uncapped_ends: bool = False):
    """The lanes forward's L split (FWD_CONFIG lanes_split_*), at the default launch's specialisation (fast math with
    the one-MUFU softplus, bf16 pairs, 8-step chunks): the first pass (lanes_ends) under lanes_split_ends_maxnreg
    (and uncapped with ``uncapped_ends``: 168 registers, no spill, 6.54 instructions per element), and the
    forward with and without SPLIT (its loop should not change: the split adds a prologue and offsets). Per row:
    registers, stack, the loop's instructions and MUFU per state element, shuffles and shared-memory accesses."""
    default = dict(FAST_MATH=2, BC_PAIRS=True, SEQ_PAIRS=True, TC=8)
    rows = []
    ends_cap = triton_launch.FWD_CONFIG["lanes_split_ends_maxnreg"]
    for name, extra, cap in ((("lanes_ends", {}, None),) if uncapped_ends else ()) + (
                             ("lanes_ends", {}, ends_cap),
                             ("lanes_fwd", {}, None), ("lanes_fwd", dict(SPLIT=True), None)):
        kw = dict(default, **extra)
        sass, regs, stack = sass_and_resources(compile_kernel(name, 32, 4, 1, maxnreg=cap, **kw))
        loop = innermost_loop(sass, longest=True)
        rows.append(dict(kernel=name, variant=extra, maxnreg=cap, registers=regs, stack=stack,
                         per_element=lanes_per_element(loop, kw), mufu_per_element=loop.get("MUFU", 0) / (8 * 16),
                         shuffles=loop.get("SHFL", 0),
                         shared=sum(k for op, k in loop.items() if op in ("LDS", "STS", "LDSM", "BAR"))))
    return rows


def _whole_kernel_counts(compiled) -> dict:
    """Registers, stack, the whole kernel's instructions and MUFU, and its innermost loop's instructions."""
    sass, regs, stack = sass_and_resources(compiled)
    ops = [m.group(2).split(".")[0] for m in map(_LINE.match, sass.splitlines()) if m]
    return dict(registers=regs, stack=stack, instructions=len(ops), mufu=ops.count("MUFU"),
                loop_instructions=sum(innermost_loop(sass).values()))


def softplus_report():
    """The chunked forward (FWD_CONFIG's T 512, one warp, the cap of 96) with libdevice's softplus and with FWD_CONFIG
    fast_softplus (triton_kernels._softplus_one_mufu): at inference without and with the "latency" prefetch, and in
    training (the backward's states saved every 256 steps, no prefetch; the cap and the fast softplus there since the
    thirty-second session). Per row registers, stack, the whole kernel's instructions and MUFU, and the loop over
    state components'."""
    rows = []
    for save_states, prefetch in ((False, False), (False, True), (True, False)):
        for fast in (False, True):
            rows.append(dict(save_states=save_states, prefetch=prefetch, fast_softplus=fast, **_whole_kernel_counts(
                compile_kernel("fwd", 1, 512, 1, maxnreg=96, prefetch=prefetch, FAST_SOFTPLUS=fast,
                               SAVE_STATES=save_states, SAVES_PER_CHUNK=2 if save_states else 1))))
    return rows


def gluon_report(variants=GLUON_VARIANTS):
    """Per variant: registers, stack and the loop's instructions per state element of the Gluon forward and of the
    Triton forward compiled with the same specialisation (what tests/test_triton_ops.py checks)."""
    rows = []
    for variant in variants:
        kw = dict(variant)
        T, num_warps, maxnreg = kw.pop("T"), kw.pop("num_warps"), kw.pop("maxnreg", None)
        row = dict(variant=variant)
        for name in ("gluon_fwd", "fwd"):
            sass, regs, stack = sass_and_resources(compile_kernel(name, 1, T, num_warps, maxnreg, **kw))
            loop = innermost_loop(sass)
            row[name] = dict(registers=regs, stack=stack, per_element=sum(loop.values()) * 32 * num_warps / T,
                             shared=sum(loop.get(op, 0) for op in ("STS", "LDS", "LDSM")))
        rows.append(row)
    return rows


# The kernels launched with programmatic dependent launch (``CachedLaunch(fn, pdl=True)``), each with constexprs of
# a decode-step launch; pointers are bf16 but for those named (fp32 / int32).
PDL_KERNELS = {
    "state_update": ("seqmamba.ops.selective_state_update.triton_kernels", "_selective_state_update_kernel",
                     dict(HAS_D=True, HAS_Z=True, HAS_DT_BIAS=True, SOFTPLUS=True, BLOCK_D=64, BLOCK_N=16,
                          DT_PROJ=False, BLOCK_R=2, ONE_GROUP=True), {"A_ptr", "D_ptr", "dt_bias_ptr", "state_ptr"}),
    "state_update_rows": ("seqmamba.ops.selective_state_update.triton_kernels", "_selective_state_update_rows_kernel",
                          dict(HAS_D=True, HAS_Z=True, HAS_DT_BIAS=True, SOFTPLUS=True, BLOCK_B=16, BLOCK_D=32,
                               BLOCK_N=16, BLOCK_R=128, FP32_DOT=False), {"A_ptr", "D_ptr", "dt_bias_ptr"}),
    "conv_update": ("seqmamba.ops.causal_conv1d.triton_kernels", "_causal_conv1d_update_kernel",
                    dict(WIDTH=4, BLOCK_W=4, HAS_BIAS=True, SILU=True, BLOCK_D=256), set()),
    "decode_linear": ("seqmamba.ops.decode_linear.triton_kernels", "_decode_linear_kernel",
                      dict(HAS_BIAS=False, SPLIT_K=8, BLOCK_M=16, BLOCK_N=64, BLOCK_K=128, FP32_DOT=False,
                           EVEN_K=True, LAST_ARRIVER_SUMS=True), {"part_ptr", "count_ptr:i32"}),
    "decode_linear_sum": ("seqmamba.ops.decode_linear.triton_kernels", "_decode_linear_sum_kernel",
                          dict(HAS_BIAS=True, SPLIT_K=16, BLOCK=256), {"part_ptr"}),
    "add_norm_fwd": ("seqmamba.ops.layer_norm.triton_kernels", "_add_norm_fwd_kernel",
                     dict(HAS_RESIDUAL=True, STORE_RESIDUAL_OUT=True, HAS_BIAS=False, IS_RMS_NORM=True, ROWS=1,
                          BLOCK_N=2048), {"RES", "RES_OUT", "MEAN", "RSTD"}),
    "add_norm_bwd": ("seqmamba.ops.layer_norm.triton_kernels", "_add_norm_bwd_kernel",
                     dict(HAS_DRESIDUAL_OUT=True, STORE_DRESIDUAL_IN=True, HAS_BIAS=False, IS_RMS_NORM=True, ROWS=1,
                          BLOCK_N=2048), {"DW_PART", "DB_PART", "MEAN", "RSTD"}),
    "conv_fwd": ("seqmamba.ops.causal_conv1d.triton_kernels", "_causal_conv1d_fwd_kernel",
                 dict(WIDTH=4, HAS_BIAS=True, SILU=True, BLOCK_D=8, BLOCK_L=256, COLUMN_TAPS=True), set()),
    "conv_dpre": ("seqmamba.ops.causal_conv1d.triton_kernels", "_causal_conv1d_dpre_kernel",
                  dict(WIDTH=4, HAS_BIAS=True, SILU=True, BLOCK_D=4, BLOCK_L=256, COLUMN_TAPS=True),
                  {"dpre_ptr", "dw_ptr", "dbias_ptr"}),
    "conv_dx": ("seqmamba.ops.causal_conv1d.triton_kernels", "_causal_conv1d_dx_kernel",
                dict(WIDTH=4, BLOCK_D=4, BLOCK_L=256, COLUMN_TAPS=True), {"dpre_ptr"}),
    "conv_bwd": ("seqmamba.ops.causal_conv1d.triton_kernels", "_causal_conv1d_bwd_kernel",
                 dict(WIDTH=4, HAS_BIAS=True, SILU=True, BLOCK_D=4, BLOCK_L=256), {"dw_ptr", "dbias_ptr"}),
    "linear_fwd": ("seqmamba.ops.channel_linear", "_linear_fwd_kernel",
                   dict(BLOCK_M=128, BLOCK_K=16, BLOCK_L=64, F32=False), set()),
    "linear_bwd": ("seqmamba.ops.channel_linear", "_linear_bwd_kernel",
                   dict(BLOCK_M=128, BLOCK_K=16, BLOCK_L=64, ACCUMULATE=False, F32=False), {"dw_ptr"}),
}
# The selective scan's PDL kernels, compiled as compile_kernel specialises them (a launch at (8, 1536, 4096) bf16).
PDL_SCAN_KERNELS = {"fwd": "_selective_scan_fwd_kernel", "bwd": "_selective_scan_bwd_kernel",
                    "dstate": "_selective_scan_dstate_kernel", "lanes_fwd": "_selective_scan_fwd_lanes_kernel",
                    "lanes_ends": "_segment_end_states_lanes_kernel"}
_POINTER_NAMES = {"X", "RES", "W", "B", "Y", "RES_OUT", "MEAN", "RSTD", "DY", "DX", "DRES_OUT", "DRES_IN", "DW_PART",
                  "DB_PART"}
_GLOBAL_MEMORY = re.compile(r"^(LDG|STG|RED|ATOM|ATOMG|LDGSTS|LDGDEPBAR|UTMALDG|UBLKCP)")


def pdl_report(arch: int = 90):
    """For each PDL kernel compiled with PDL on and off: the positions (instruction index) of the grid dependency
    wait (ACQBULK), the trigger (PREEXIT) and the first global memory instruction; -1 where absent. The scan's
    kernels with PDL on only (their plain compiles are the other reports'). Last row: every kernel name that
    ``CachedLaunch(..., pdl=True)`` registered, to check that none is left out here."""
    import importlib
    import pkgutil

    import seqmamba.ops
    from seqmamba.ops import launch
    for module in pkgutil.walk_packages(seqmamba.ops.__path__, "seqmamba.ops."):  # every kernel registers itself
        importlib.import_module(module.name)
    rows = []

    def row(name, pdl, compiled):
        sass, _, _ = sass_and_resources(compiled)
        ops = [m.group(2) for m in map(_LINE.match, sass.splitlines()) if m]
        first = lambda test: next((i for i, op in enumerate(ops) if test(op)), -1)  # noqa: E731
        return dict(kernel=name, pdl=pdl, launch_pdl=bool(compiled.metadata.launch_pdl),
                    wait=first(lambda op: op == "ACQBULK"), trigger=first(lambda op: op == "PREEXIT"),
                    first_global=first(lambda op: bool(_GLOBAL_MEMORY.match(op))), instructions=len(ops))

    for short, name in PDL_SCAN_KERNELS.items():
        if short in ("lanes_fwd", "lanes_ends"):
            warps = triton_launch.FWD_CONFIG["lanes_num_warps"]
            compiled = compile_kernel(short, 32 * warps, 4, warps, PDL=True)
        else:
            cfg = triton_launch.BWD_CONFIG if short in ("bwd", "dstate") else triton_launch.FWD_CONFIG
            compiled = compile_kernel(short, cfg["block_d"], cfg["T"], cfg["num_warps"], PDL=True)
        rows.append(row(name, True, compiled))
        rows[-1]["launch_pdl"] = True  # compile_kernel leaves the launch option out; the code is the same
    for name, (module, attr, constexprs, special) in PDL_KERNELS.items():
        fn = getattr(importlib.import_module(module), attr)
        typed = dict(item.split(":") if ":" in item else (item, "fp32") for item in special)
        for pdl in (True, False):
            signature, constants = {}, {}
            for arg, param in zip(fn.arg_names, fn.params):
                if param.is_constexpr:
                    signature[arg], constants[arg] = "constexpr", dict(constexprs, PDL=pdl)[arg]
                elif arg.endswith("_ptr") or arg in _POINTER_NAMES:
                    signature[arg] = "*" + typed.get(arg, "bf16")
                else:
                    signature[arg] = "fp32" if arg == "eps" else "i32"
            compiled = triton.compile(ASTSource(fn, signature, constants, {}), target=GPUTarget("cuda", arch, 32),
                                      options=dict(num_warps=4, launch_pdl=pdl))
            rows.append(row(attr, pdl, compiled))
    rows.append(dict(registered=sorted(launch.PDL_KERNEL_NAMES)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernel", choices=list(KERNELS) + ["all"], default="all")
    parser.add_argument("--block-d", type=int, default=None)
    parser.add_argument("--T", type=int, default=None)
    parser.add_argument("--num-warps", type=int, default=None)
    parser.add_argument("--maxnreg", type=int, default=None)
    parser.add_argument("--prefetch", action="store_true")
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--fast-flip", action="store_true", help="backward / dstate: the one-shuffle flips")
    parser.add_argument("--fast-flip-shift", action="store_true",
                        help="backward / dstate: the flips and the one-step shift (BWD_CONFIG fast_flip 'shift')")
    parser.add_argument("--histogram", action="store_true", help="print the loop's opcode counts")
    parser.add_argument("--sass", default=None, help="write the whole SASS here (one kernel)")
    parser.add_argument("--fast-flip-layouts", action="store_true",
                        help="JSON: the fast flip's layouts in every specialisation it may run in")
    parser.add_argument("--gluon-report", action="store_true",
                        help="JSON: the Gluon forward against the Triton forward, per specialisation")
    parser.add_argument("--lanes-report", action="store_true",
                        help="JSON: the lanes forward's registers, loop and shuffles per specialisation")
    parser.add_argument("--softplus-report", action="store_true",
                        help="the chunked inference forward with libdevice's softplus and with fast_softplus (JSON)")
    parser.add_argument("--lanes-split-report", action="store_true",
                        help="JSON: the lanes split's first pass and the forward with SPLIT, registers and loop")
    parser.add_argument("--pdl-report", action="store_true",
                        help="JSON: where the PDL kernels wait, trigger and first touch global memory")
    args = parser.parse_args()
    reports = dict(pdl_report=lambda: pdl_report(args.arch), lanes_report=lanes_report, softplus_report=softplus_report,
                   lanes_split_report=lanes_split_report, fast_flip_layouts=fast_flip_report, gluon_report=gluon_report)
    for flag, make in reports.items():  # the JSON reports the tests read: one per run, printed last
        if getattr(args, flag):
            print(json.dumps(make()))
            return
    names = list(KERNELS) if args.kernel == "all" else [args.kernel]
    for name in names:
        if name == "lanes_fwd":  # one channel per lane: 32 per warp, chunks of 8 bf16 steps
            warps = args.num_warps or triton_launch.FWD_CONFIG["lanes_num_warps"]
            report(name, 32 * warps, 4, warps, args.maxnreg, False, args.histogram, args.sass, arch=args.arch)
            continue
        cfg = triton_launch.BWD_CONFIG if name in ("bwd", "dstate") else triton_launch.FWD_CONFIG
        report(name, args.block_d or cfg["block_d"], args.T or cfg["T"], args.num_warps or cfg["num_warps"],
               args.maxnreg, args.prefetch or (name == "bwd" and cfg.get("prefetch") is True), args.histogram,
               args.sass, arch=args.arch, FAST_FLIP=2 if args.fast_flip_shift else int(args.fast_flip))


if __name__ == "__main__":
    main()
