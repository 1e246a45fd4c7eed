"""Benchmark flags that set one of the toolkit's module-level switches for the whole run, so that one device call
can time a switch both ways (``--project-channels-grad off``, then ``on``). Each flag is named once here: the
module, the switch, what its values mean.

    parser = argparse.ArgumentParser(); add_switches(parser, "project-channels-grad", "split-passes")
    args = parser.parse_args(); apply_switches(args)
"""
from __future__ import annotations

import argparse
import importlib

# flag -> (module, attribute, {flag value: attribute value}, help)
SWITCHES = {
    "channels-first-linear": (
        "seqmamba.modules.mamba", "CHANNELS_FIRST_LINEAR_GRAD", {"on": True, "off": False},
        "x_proj / out_proj hand their input's gradient back L-contiguous (on, the default) or time-major, as the "
        "batched matmul's autograd does (off)"),
    "project-channels-grad": (
        "seqmamba.modules.mamba", "PROJECT_CHANNELS_INPUT_GRAD", {"on": True, "off": False},
        "in_proj / dt_proj hand their input's gradient back time-major, as the residual stream stores it (on, the "
        "default) or transposed, as the batched matmul's autograd does (off)"),
    "x-proj-layout": (
        "seqmamba.modules.mamba", "X_PROJ_CHANNELS_FIRST", {"channels-first": True, "time-major": False},
        "x_proj in the channels-first forward as W @ x_conv, B / C handed to the scan as rows of its output "
        "(channels-first, the default), or time-major with B / C copied contiguous (time-major)"),
    "conv-taps": (
        "seqmamba.ops.causal_conv1d.triton_kernels", "COLUMN_TAPS", {"columns": True, "shifted": False},
        "the causal conv's taps from the columns of two aligned loads (columns, the default) or one shifted load "
        "per tap (shifted)"),
    "conv-backward": (
        "seqmamba.ops.causal_conv1d.triton_kernels", "FUSED_BACKWARD", {"one-kernel": True, "two-kernels": False},
        "the causal conv's backward (with column taps) as one kernel recomputing dpre where dx needs it (one-kernel, "
        "the default) or as the dpre and dx kernels, dpre through memory in fp32 (two-kernels)"),
    "mamba-inner": (
        "seqmamba.ops.mamba_inner", "ENABLED", {"on": True, "off": False},
        "the Mamba block's training inner path (conv, x_proj, dt_proj, scan) as one autograd node (on, the default) "
        "or as the separate ops (off)"),
    "channel-linear": (
        "seqmamba.ops.channel_linear", "ENABLED", {"triton": True, "bmm": False},
        "the Mamba inner node's x_proj / dt_proj backward as one pass per projection (triton, the default where the "
        "weight fits one tile) or as two batched GEMMs and a batch sum each (bmm)"),
    "split-passes": (
        "seqmamba.ops.selective_scan.triton_launch", "SPLIT_REDUCTION_PASSES", {"reduction": True, "scan": False},
        "the L split's no-carry passes as reductions (the default) or as scans"),
    "decode-linear": (
        "seqmamba.ops.decode_linear.triton_kernels", "ENABLED", {"triton": True, "cublas": False},
        "a decode step's projections by the split-K Triton kernel where its rule says so (triton) or all by "
        "F.linear (cublas)"),
    "graph-check": (
        "seqmamba.train.cuda_graph", "DEFERRED_CHECK", {"deferred": True, "sync": False},
        "a graphed training step's loss / grad norm checked one step late, the update skipping itself on the "
        "device (deferred, the default), or read by the host between the two graphs (sync)"),
}


def add_switches(parser: argparse.ArgumentParser, *names: str) -> None:
    """--NAME for each switch named (left out: the library's default stays)."""
    for name in names:
        module, attribute, values, help_text = SWITCHES[name]
        parser.add_argument(f"--{name}", choices=list(values), default=None,
                            help=f"{module}.{attribute}: {help_text}")


def apply_switches(args: argparse.Namespace) -> dict:
    """Sets every switch given on the command line; returns {attribute: value} of those set."""
    applied = {}
    for name, (module, attribute, values, _) in SWITCHES.items():
        given = getattr(args, name.replace("-", "_"), None)
        if given is not None:
            setattr(importlib.import_module(module), attribute, values[given])
            applied[attribute] = values[given]
    return applied
