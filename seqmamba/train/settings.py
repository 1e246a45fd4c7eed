"""The trainer's settings (``trainer.*``): defaults in one place, checked when read.

:class:`TrainerSettings` is the single source of the defaults: ``configs/trainer/default.yaml``
holds the same keys and values, and a test checks that they agree with this class and its docstring.
``TrainerSettings.from_config(cfg)`` reads ``cfg.trainer``, fills the defaults, and rejects a bad
value (one line: key, value, what is accepted) or an unknown key (naming the closest known one)
before anything is built.

Keys (defaults in brackets):

- ``max_steps`` [1000]: optimizer steps, >= 1
- ``batch_size`` [32]: examples per process and micro-batch (read by the task), >= 1
- ``grad_accum_steps`` [1]: micro-batches per optimizer step; the loss is divided by it
- ``device`` [auto]: auto | cpu | cuda (under torchrun, CUDA means ``cuda:LOCAL_RANK``)
- ``precision`` [auto]: auto | fp32 | bf16 | fp16; autocast runs on CUDA only (auto = bf16 there,
  fp32 on the CPU); fp16 uses a GradScaler. Training and every evaluation use the same precision.
- ``grad_clip`` [1.0]: max global grad norm; 0 or null disables clipping (the norm is still logged)
- ``eval_every`` [100]: evaluate every N steps; 0 = only at the end
- ``log_every`` [10]: log the averaged training metrics every N steps
- ``ckpt_every`` [100]: write ``checkpoints/last.pt`` every N steps; 0 = only at the end
- ``num_threads`` [null]: torch CPU threads; null or 0 keeps torch's default
- ``progress`` [true]: tqdm bar on rank 0
- ``tensorboard`` [true]: TensorBoard event files beside metrics.jsonl / metrics.csv
- ``early_stop_metric`` [null], ``early_stop_threshold`` [null]: stop once an evaluated metric
  reaches the threshold (set both or neither)
- ``early_stop_mode`` [null]: min | max; null = the task's monitor_mode if the metric is the task's
  monitor, else max
- ``seq_len_warmup`` [null]: list of ``[start_step, length]``; the task must support it
- ``compile`` [false]: false | true | auto. torch.compile the training forward (Inductor; the scan and the
  conv stay opaque custom ops). ``auto`` compiles where the step replays from CUDA graphs (``cuda_graph``),
  the small models where Inductor's fusions pay for their ~0.5-1 min of compilation: on an H200 the paper's
  selective-copying step 124-126 -> 135-137 steps/s, induction heads 1368 -> 1615.
- ``activation_checkpointing`` [false]: recompute activations in backward
  (``model.set_activation_checkpointing(True)``; a model without it fails in one line)
- ``resume`` [false]: auto / true resumes from ``<run dir>/checkpoints/last.pt`` when it exists
- ``ddp_find_unused_parameters`` [false]: passed to DistributedDataParallel
- ``deterministic`` [false]: ``torch.use_deterministic_algorithms`` (warn-only) and the ops' deterministic
  backends: on CUDA the scan and conv run their PyTorch path instead of Triton (whose backward sums with
  atomics), so two runs, or a run and its resumed copy, give the same weights bit for bit; slower
- ``stop_at_step`` [null]: pause after this step: write ``last.pt`` and return without the final
  evaluation (the schedule still runs to ``max_steps``; ``resume=auto`` continues). For jobs split
  over several commands or batch allocations.
- ``time_limit_s`` [null]: pause the same way once this many seconds of training have passed in this
  process (rank 0's clock decides for every rank)
- ``cuda_graph`` [false]: false | true | auto. Replay each training step from CUDA graphs (forward +
  backward + clipping, then the optimizer step; :mod:`seqmamba.train.cuda_graph`), for small models
  whose eager step is launch-bound. ``true`` fails in one line where a step cannot be captured (CPU,
  DDP, gradient accumulation, fp16); ``auto`` then trains eagerly. With ``compile`` the graphs capture
  the compiled model's kernels.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from seqmamba.config_checks import (
    ConfigValueError,
    check_choice,
    check_float,
    check_int,
    section,
    unknown_key_message,
)


@dataclass
class TrainerSettings:
    max_steps: int = 1000
    batch_size: int = 32
    grad_accum_steps: int = 1
    device: str = "auto"
    precision: str = "auto"
    grad_clip: float = 1.0
    eval_every: int = 100
    log_every: int = 10
    ckpt_every: int = 100
    num_threads: Optional[int] = None
    progress: bool = True
    tensorboard: bool = True
    early_stop_metric: Optional[str] = None
    early_stop_threshold: Optional[float] = None
    early_stop_mode: Optional[str] = None
    seq_len_warmup: Optional[List[Tuple[int, int]]] = None
    compile: Any = False
    activation_checkpointing: bool = False
    resume: Any = False
    ddp_find_unused_parameters: bool = False
    deterministic: bool = False
    stop_at_step: Optional[int] = None
    time_limit_s: Optional[float] = None
    cuda_graph: Any = False

    @classmethod
    def keys(cls) -> List[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_config(cls, cfg: Any) -> "TrainerSettings":
        """``cfg.trainer`` merged over the defaults and checked."""
        given = section(cfg, "trainer")
        known = cls.keys()
        for key in given:
            if key not in known:
                raise ConfigValueError(unknown_key_message(f"trainer.{key}", [f"trainer.{k}" for k in known]))
        values = {**dataclasses.asdict(cls()), **given}
        s = cls(**values)
        s.max_steps = check_int("trainer.max_steps", s.max_steps, minimum=1)
        s.batch_size = check_int("trainer.batch_size", s.batch_size, minimum=1)
        s.grad_accum_steps = check_int("trainer.grad_accum_steps", s.grad_accum_steps, minimum=1)
        s.device = _check_device(s.device)
        s.precision = check_choice("trainer.precision", s.precision or "auto", ("auto", "fp32", "bf16", "fp16"))
        s.grad_clip = check_float("trainer.grad_clip", s.grad_clip or 0.0, minimum=0.0,
                                  accepted="a number >= 0 (0 or null: no clipping)")
        s.eval_every = check_int("trainer.eval_every", s.eval_every or 0, minimum=0,
                                 accepted="an integer >= 0 (0: only at the end)")
        s.log_every = check_int("trainer.log_every", s.log_every, minimum=1)
        s.ckpt_every = check_int("trainer.ckpt_every", s.ckpt_every or 0, minimum=0,
                                 accepted="an integer >= 0 (0: only at the end)")
        s.num_threads = check_int("trainer.num_threads", s.num_threads or 0, minimum=0,
                                  accepted="an integer >= 0 or null (torch's default)")
        for flag in ("progress", "tensorboard", "activation_checkpointing", "ddp_find_unused_parameters",
                     "deterministic"):
            value = getattr(s, flag)
            if not isinstance(value, bool):
                raise ConfigValueError(f"trainer.{flag}={value!r} is not accepted; expected true or false")
        if (s.early_stop_metric is None) != (s.early_stop_threshold is None):
            raise ConfigValueError(
                "trainer.early_stop_metric and trainer.early_stop_threshold must be set together "
                f"(got {s.early_stop_metric!r} and {s.early_stop_threshold!r})")
        if s.early_stop_threshold is not None:
            s.early_stop_threshold = check_float("trainer.early_stop_threshold", s.early_stop_threshold)
        if s.early_stop_mode is not None:
            s.early_stop_mode = check_choice("trainer.early_stop_mode", s.early_stop_mode, ("min", "max"))
        if s.stop_at_step is not None:
            s.stop_at_step = check_int("trainer.stop_at_step", s.stop_at_step, minimum=1,
                                       accepted="an integer >= 1 or null")
        if s.time_limit_s is not None:
            s.time_limit_s = check_float("trainer.time_limit_s", s.time_limit_s, minimum=0.0,
                                         accepted="seconds >= 0 or null")
        s.cuda_graph = _check_true_false_auto("trainer.cuda_graph", s.cuda_graph)
        s.compile = _check_true_false_auto("trainer.compile", s.compile)
        s.seq_len_warmup = parse_seq_len_warmup(s.seq_len_warmup)
        if s.resume in (None, False, "", "never", "none"):
            s.resume = False
        elif s.resume in (True, "auto"):
            s.resume = "auto"
        else:
            raise ConfigValueError(f"trainer.resume={s.resume!r} is not accepted; expected auto (or true), "
                                   f"or null / false")
        return s


def _check_true_false_auto(key: str, value: Any) -> str:
    """true / false (YAML booleans or strings) or auto -> "true" | "false" | "auto"."""
    if isinstance(value, bool) or value is None:
        return "true" if value else "false"
    name = str(value).lower()
    if name in ("true", "false", "auto"):
        return name
    raise ConfigValueError(f"{key}={value!r} is not accepted; expected true, false or auto")


def _check_device(value: Any) -> str:
    name = str(value or "auto").lower()
    if name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit()):
        return name
    raise ConfigValueError(f"trainer.device={value!r} is not accepted; expected auto, cpu, cuda or cuda:<index>")


def parse_seq_len_warmup(schedule: Any) -> List[Tuple[int, int]]:
    """``[[start_step, length], ...]`` -> sorted list of int pairs, validated."""
    if not schedule:
        return []
    pairs = []
    for entry in schedule:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ConfigValueError(f"trainer.seq_len_warmup entry {entry!r} is not accepted; expected [start_step, length]")
        start, length = int(entry[0]), int(entry[1])
        if start < 0 or length <= 0:
            raise ConfigValueError(f"trainer.seq_len_warmup entry {list(entry)} is not accepted; expected "
                                   f"start_step >= 0 and length > 0")
        pairs.append((start, length))
    starts = [s for s, _ in pairs]
    if starts != sorted(starts) or len(set(starts)) != len(starts):
        raise ConfigValueError(f"trainer.seq_len_warmup start steps {starts} are not accepted; they must strictly increase")
    return pairs
