"""The training loop shared by every task.

API::

    trainer = Trainer(task, cfg, run_dir)   # builds model/optimizer/schedule, resumes if asked
    final = trainer.fit()                    # -> dict of final metrics
    metrics = trainer.evaluate()             # -> {"<val set>/<metric>": float}

``cfg`` is an OmegaConf DictConfig or a plain dict; every key is optional (defaults in brackets):

- ``seed`` [0]
- ``trainer.max_steps`` [1000]: optimizer steps
- ``trainer.grad_accum_steps`` [1]: micro-batches per optimizer step (the task sizes each
  micro-batch from ``trainer.batch_size``; the trainer divides the loss by this number)
- ``trainer.device`` [auto]: auto | cpu | cuda (under torchrun, CUDA means ``cuda:LOCAL_RANK``)
- ``trainer.precision`` [auto]: auto | fp32 | bf16 | fp16. Autocast runs on CUDA only; auto = bf16
  on CUDA (fp32 if the GPU lacks it), fp32 on the CPU; bf16/fp16 asked for on a CPU fall back to
  fp32 with a warning. fp16 uses a GradScaler.
- ``trainer.grad_clip`` [1.0]: max global grad norm; 0 or null disables clipping (the norm is still logged)
- ``trainer.log_every`` [10], ``trainer.eval_every`` [0 = only at the end],
  ``trainer.ckpt_every`` [1000; 0 = only at the end]: in optimizer steps
- ``trainer.num_threads`` [0 = torch's default]
- ``trainer.progress`` [true]: tqdm bar on rank 0 (loss, lr, it/s)
- ``trainer.early_stop_metric`` [null], ``trainer.early_stop_threshold`` [null],
  ``trainer.early_stop_mode`` [task.monitor_mode if the metric is task.monitor, else max]: stop
  once an evaluated metric reaches the threshold (e.g. ``val/accuracy`` >= 0.99)
- ``trainer.seq_len_warmup`` [null]: list of ``[start_step, length]``; at each start step the
  trainer calls ``task.set_seq_len(length)`` and reopens ``task.train_batches`` there
- ``trainer.compile`` [false]: torch.compile the training forward
- ``trainer.resume`` [null]: ``auto`` (or ``true``) resumes from ``run_dir/checkpoints/last.pt`` when
  it exists; null / false starts fresh
- ``trainer.tensorboard`` [true], ``trainer.ddp_find_unused_parameters`` [false]
- ``optimizer.{name [adamw] | adam, lr [1e-3], weight_decay [0.01], betas [[0.9, 0.999]], eps [1e-8],
  no_decay_embeddings [false], fused [true on CUDA]}`` (see ``optim.py`` for the groups)
- ``scheduler.{name [cosine] | linear | constant, warmup_steps [0] or warmup_ratio, min_lr_ratio [0.0]}``
- ``ckpt`` [null]: checkpoint to resume from (model, optimizer, schedule, scaler, step, RNG, best)

Run directory (written by rank 0 only): ``config.yaml`` (resolved), ``metrics.jsonl``,
``metrics.csv``, ``tensorboard/``, ``checkpoints/last.pt`` (every ckpt_every steps and at the end),
``checkpoints/best.pt`` (best ``task.monitor`` so far), ``loss_curve.png`` (at the end).

Semantics the tasks can rely on:

- ``task.train_batches(step, rank, world_size)`` gets the next optimizer step (the global step a
  resumed run continues from) and must yield ``trainer.grad_accum_steps`` micro-batches per step,
  so a resumed run sees the same batches as the uninterrupted one.
- ``task.training_step`` receives the model that trains (DDP / compiled wrapper): call it, don't
  reach for its attributes. ``task.evaluate`` receives the plain module in eval mode, under
  ``torch.no_grad`` and the run's autocast, with batches already moved to the device; it runs on
  rank 0 only and its metrics are broadcast, and it never disturbs the training RNG streams.
- A non-finite loss (or, without fp16 scaling, gradient norm) stops the run with
  :class:`TrainingError` before the optimizer applies it; checkpoints on disk stay the last good ones.
- Resuming from ``last.pt`` at step k reproduces the uninterrupted run bit for bit on the same
  machine (same data, weights, optimizer state, schedule, RNG streams, per rank).

Under torchrun: call ``seqmamba.train.distributed.init_distributed`` first if you need a collective
before the Trainer (e.g. ``broadcast_object`` of the run dir); the Trainer initialises the group
itself otherwise. Tear it down with ``destroy_distributed()`` at the end of the process.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import distributed as dist_utils
from seqmamba.atomic_write import atomic_write_text, remove_stale_temp_files

from .checkpoint import atomic_torch_save, load_model_weights, make_checkpoint
from .metrics import MetricsLogger, plot_curves
from .optim import build_optimizer
from .schedule import build_scheduler
from .seeding import capture_rng_state, preserved_rng_state, restore_rng_state, seed_everything

log = logging.getLogger("seqmamba.train")

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, exhausted data). ``str()`` is one line for the CLI."""


# -- small config helpers --------------------------------------------------------------------------------
def _as_config(cfg: Any) -> DictConfig:
    if isinstance(cfg, DictConfig):
        return cfg
    if cfg is None:
        return OmegaConf.create({})
    if isinstance(cfg, Mapping):
        return OmegaConf.create(dict(cfg))
    raise TypeError(f"cfg must be an OmegaConf DictConfig or a dict, got {type(cfg).__name__}")


def _section(cfg: DictConfig, key: str) -> Dict[str, Any]:
    """A config section as a plain dict ({} when absent)."""
    node = OmegaConf.select(cfg, key, default=None)
    if node is None:
        return {}
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    raise TypeError(f"config section {key!r} must be a mapping, got {node!r}")


def _config_yaml(cfg: DictConfig) -> str:
    try:
        return OmegaConf.to_yaml(cfg, resolve=True)
    except Exception as exc:  # e.g. ${hydra:...} interpolations outside a Hydra app
        log.warning("config could not be resolved (%s); saving it unresolved", exc)
        return OmegaConf.to_yaml(cfg, resolve=False)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    name = str(name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"trainer.device={name!r} but CUDA is not available here; use 'cpu' or 'auto'")
        return torch.device(name) if ":" in name else torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"trainer.device={name!r} is not supported; expected auto, cpu or cuda")


def apply_num_threads(num_threads: Any) -> None:
    """``trainer.num_threads``: torch's CPU thread count; 0 or null keeps torch's default."""
    threads = int(num_threads or 0)
    if threads > 0:
        torch.set_num_threads(threads)


def resolve_precision(name: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype, or None for plain fp32."""
    name = str(name or "auto").lower()
    if name not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"trainer.precision={name!r} is not supported; expected auto, fp32, bf16 or fp16")
    if name == "fp32":
        return None
    if device.type != "cuda":
        if name != "auto":
            log.warning("trainer.precision=%s needs CUDA; training in fp32 on %s", name, device)
        return None
    if name == "fp16":
        return torch.float16
    if name == "auto" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def parse_seq_len_warmup(schedule: Any) -> List[Tuple[int, int]]:
    """``[[start_step, length], ...]`` -> sorted list of int pairs, validated."""
    if not schedule:
        return []
    pairs = []
    for entry in schedule:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"trainer.seq_len_warmup entry {entry!r} must be [start_step, length]")
        start, length = int(entry[0]), int(entry[1])
        if start < 0 or length <= 0:
            raise ValueError(f"trainer.seq_len_warmup entry {list(entry)} needs start_step >= 0 and length > 0")
        pairs.append((start, length))
    starts = [s for s, _ in pairs]
    if starts != sorted(starts) or len(set(starts)) != len(starts):
        raise ValueError(f"trainer.seq_len_warmup start steps {starts} must strictly increase")
    return pairs


class Trainer:
    """Drives a :class:`tasks.base.Task`; see the module docstring for the config keys."""

    def __init__(self, task: Any, cfg: Any, run_dir: str):
        self.task = task
        self.cfg = _as_config(cfg)
        self.run_dir = os.path.abspath(str(run_dir))
        self.ckpt_dir = os.path.join(self.run_dir, CHECKPOINT_DIR)
        self.config_yaml = _config_yaml(self.cfg)

        tc = _section(self.cfg, "trainer")
        self.tcfg = tc
        self.seed = int(OmegaConf.select(self.cfg, "seed", default=0) or 0)
        self.max_steps = int(tc.get("max_steps") or 1000)
        self.grad_accum_steps = int(tc.get("grad_accum_steps") or 1)
        if self.grad_accum_steps < 1:
            raise ValueError(f"trainer.grad_accum_steps={self.grad_accum_steps} must be >= 1")
        self.grad_clip = float(tc.get("grad_clip", 1.0) or 0.0)
        self.log_every = max(1, int(tc.get("log_every") or 10))
        self.eval_every = int(tc.get("eval_every") or 0)
        self.ckpt_every = int(tc.get("ckpt_every", 1000) or 0)
        self.progress = bool(tc.get("progress", True))
        self.use_tensorboard = bool(tc.get("tensorboard", True))
        self.seq_len_schedule = parse_seq_len_warmup(tc.get("seq_len_warmup"))
        if self.seq_len_schedule and not callable(getattr(task, "set_seq_len", None)):
            raise ValueError(
                f"trainer.seq_len_warmup is set but task {type(task).__name__} has no set_seq_len(length) method"
            )
        self.monitor = str(getattr(task, "monitor", "val/loss"))
        self.monitor_mode = str(getattr(task, "monitor_mode", "min"))
        if self.monitor_mode not in ("min", "max"):
            raise ValueError(f"task.monitor_mode={self.monitor_mode!r} must be 'min' or 'max'")
        self.early_stop_metric = tc.get("early_stop_metric")
        self.early_stop_threshold = tc.get("early_stop_threshold")
        if (self.early_stop_metric is None) != (self.early_stop_threshold is None):
            raise ValueError(
                "trainer.early_stop_metric and trainer.early_stop_threshold must be set together "
                f"(got {self.early_stop_metric!r} and {self.early_stop_threshold!r})"
            )
        default_mode = self.monitor_mode if self.early_stop_metric == self.monitor else "max"
        self.early_stop_mode = str(tc.get("early_stop_mode") or default_mode)
        if self.early_stop_mode not in ("min", "max"):
            raise ValueError(f"trainer.early_stop_mode={self.early_stop_mode!r} must be 'min' or 'max'")

        # -- processes and device ------------------------------------------------------------------
        requested = str(tc.get("device") or "auto").lower()
        device_type = "cuda" if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist_env = dist_utils.init_distributed(device_type)
        self.rank, self.world_size = self.dist_env.rank, self.dist_env.world_size
        self.is_rank0 = self.dist_env.is_rank0
        self.device = resolve_device(requested, self.dist_env.local_rank)
        apply_num_threads(tc.get("num_threads"))
        self.autocast_dtype = resolve_precision(tc.get("precision", "auto"), self.device)

        # -- model, optimizer, schedule ------------------------------------------------------------
        seed_everything(self.seed)  # identical initial weights on every rank
        self.model: nn.Module = task.build_model().to(self.device)
        if self.dist_env.is_distributed:
            # distinct dropout/sampling streams per rank (rank 0 keeps the plain seed)
            seed_everything(self.seed + 1_000_003 * self.rank)
        train_model = self.model
        if bool(tc.get("compile", False)):
            train_model = torch.compile(train_model)
        self.train_model = dist_utils.wrap_ddp(
            train_model, self.device, bool(tc.get("ddp_find_unused_parameters", False))
        )
        self.optimizer = build_optimizer(self.model, _section(self.cfg, "optimizer"), self.device.type)
        self.scheduler = build_scheduler(self.optimizer, _section(self.cfg, "scheduler"), self.max_steps)
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)

        self.step = 0
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        self.resumed_from: Optional[str] = None
        ckpt_path = self._resume_path()
        if ckpt_path is not None:
            self.load(ckpt_path)

    # -- checkpoints --------------------------------------------------------------------------------
    def _resume_path(self) -> Optional[str]:
        explicit = OmegaConf.select(self.cfg, "ckpt", default=None)
        if explicit:  # a missing file is reported by load_checkpoint
            return os.path.abspath(os.path.expanduser(str(explicit)))
        resume = self.tcfg.get("resume")
        if resume in (None, False, "", "never", "none"):
            return None
        if resume not in (True, "auto"):
            raise ValueError(f"trainer.resume={resume!r} is not supported; expected auto (or true), or null / false")
        last = os.path.join(self.ckpt_dir, LAST_NAME)
        return last if os.path.isfile(last) else None

    def load(self, path: str) -> None:
        """Restore the full training state from ``path`` (every rank reads the same file)."""
        ckpt = load_model_weights(self.model, path)
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("grad_scaler") and self.grad_scaler.is_enabled():
            self.grad_scaler.load_state_dict(ckpt["grad_scaler"])
        self.step = int(ckpt["step"])
        if ckpt.get("monitor") == self.monitor:
            self.best_metric, self.best_step = ckpt.get("best_metric"), ckpt.get("best_step")
        rng = ckpt.get("rng") or []
        if len(rng) == self.world_size:
            restore_rng_state(rng[self.rank])
        else:
            log.warning(
                "checkpoint %s was written by %d process(es), this run has %d: RNG streams are reseeded, "
                "so the run continues correctly but not bit-identically", path, len(rng), self.world_size
            )
        self.resumed_from = path
        if self.is_rank0:
            log.info("resumed from %s at step %d", path, self.step)

    def save(self, name: str = LAST_NAME) -> Optional[str]:
        """Write ``checkpoints/<name>`` atomically. Collective: every rank must call it (each rank
        contributes its RNG state); rank 0 writes."""
        rng_states = dist_utils.all_gather_object(capture_rng_state())
        if not self.is_rank0:
            return None
        ckpt = make_checkpoint(
            step=self.step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            grad_scaler=self.grad_scaler,
            rng_states=rng_states,
            best_metric=self.best_metric,
            best_step=self.best_step,
            monitor=self.monitor,
            config_yaml=self.config_yaml,
        )
        path = os.path.join(self.ckpt_dir, name)
        atomic_torch_save(ckpt, path)
        return path

    # -- evaluation ---------------------------------------------------------------------------------
    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def evaluate(self) -> Dict[str, float]:
        """Every ``task.val_sets()`` entry through ``task.evaluate``; ``{"<set>/<metric>": value}``.
        Collective under DDP: rank 0 evaluates, all ranks get the result."""
        results: Dict[str, float] = {}
        if self.is_rank0:
            model = self.model
            was_training = model.training
            model.eval()
            try:
                with preserved_rng_state(), torch.no_grad(), self._autocast():
                    for set_name, batches in self.task.val_sets().items():
                        on_device = (self.task.move_to(b, self.device) for b in batches)
                        for metric, value in self.task.evaluate(model, on_device).items():
                            results[f"{set_name}/{metric}"] = float(value)
            finally:
                model.train(was_training)
        return dist_utils.broadcast_object(results)

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_metric is None:
            return True
        return value < self.best_metric if self.monitor_mode == "min" else value > self.best_metric

    def _reached_early_stop(self, metrics: Mapping[str, float]) -> bool:
        if self.early_stop_metric is None or not metrics:
            return False
        if self.early_stop_metric not in metrics:
            raise ValueError(
                f"trainer.early_stop_metric={self.early_stop_metric!r} is not among the evaluated metrics "
                f"{sorted(metrics)}"
            )
        value, target = metrics[self.early_stop_metric], float(self.early_stop_threshold)
        return value >= target if self.early_stop_mode == "max" else value <= target

    # -- training -----------------------------------------------------------------------------------
    def _seq_len_at(self, step: int) -> Optional[int]:
        length = None
        for start, value in self.seq_len_schedule:
            if start <= step:
                length = value
        return length

    def _open_batches(self) -> Iterator[Any]:
        return iter(self.task.train_batches(self.step, self.rank, self.world_size))

    def _train_step(self, batches: Iterator[Any], sums: Dict[str, float]) -> Dict[str, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches. Adds this rank's metric sums
        to ``sums`` (and the micro-batch count under ``"_count"``); returns lr and grad norm."""
        step_number = self.step + 1
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses: List[float] = []
        for micro in range(self.grad_accum_steps):
            try:
                batch = next(batches)
            except StopIteration:
                raise TrainingError(
                    f"task.train_batches ran out at step {step_number} (micro-batch {micro}); it must be infinite"
                ) from None
            batch = self.task.move_to(batch, self.device)
            last_micro = micro == self.grad_accum_steps - 1
            no_sync = self.dist_env.is_distributed and not last_micro
            with (self.train_model.no_sync() if no_sync else contextlib.nullcontext()):
                with self._autocast():
                    loss, metrics = self.task.training_step(self.train_model, batch)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value) and not self.dist_env.is_distributed:
                    # raise before backward: nothing of the bad batch reaches weights or checkpoints
                    raise TrainingError(
                        f"non-finite training loss {loss_value} at step {step_number} "
                        f"(micro-batch {micro}); stopped, the last good checkpoint is kept"
                    )
                self.grad_scaler.scale(loss / self.grad_accum_steps).backward()
            losses.append(loss_value)
            sums["loss"] = sums.get("loss", 0.0) + loss_value
            for key, value in metrics.items():
                if key != "loss":  # already counted from the returned loss
                    sums[key] = sums.get(key, 0.0) + float(value)
            sums["_count"] = sums.get("_count", 0.0) + 1.0

        if self.dist_env.is_distributed:
            # every rank must agree to stop, or the others would hang in the next collective
            bad = dist_utils.all_reduce_sums({"nonfinite": float(sum(not math.isfinite(v) for v in losses))})
            if bad["nonfinite"] > 0:
                raise TrainingError(
                    f"non-finite training loss at step {step_number} on {int(bad['nonfinite'])} micro-batch(es) "
                    f"across ranks (this rank's losses: {losses}); stopped, the last good checkpoint is kept"
                )

        if self.grad_scaler.is_enabled():
            self.grad_scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm) and not self.grad_scaler.is_enabled():
            raise TrainingError(
                f"non-finite gradient norm {grad_norm} at step {step_number} (loss {losses}); "
                "stopped before the update, the last good checkpoint is kept"
            )
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.grad_scaler.step(self.optimizer)  # plain optimizer.step() when the scaler is disabled
        self.grad_scaler.update()
        self.scheduler.step()
        self.step = step_number
        return {"lr": lr, "grad_norm": grad_norm}

    def _reduce_window(self, sums: Dict[str, float]) -> Dict[str, float]:
        totals = dist_utils.all_reduce_sums(sums)
        count = max(totals.pop("_count", 1.0), 1.0)
        return {f"train/{k}": v / count for k, v in totals.items()}

    def fit(self) -> Dict[str, Any]:
        """Train to ``trainer.max_steps`` (or the early-stop target); returns the final metrics."""
        if self.is_rank0:
            os.makedirs(self.ckpt_dir, exist_ok=True)
            for directory in (self.ckpt_dir, self.run_dir):  # checkpoints; metrics files
                remove_stale_temp_files(directory)
            atomic_write_text(os.path.join(self.run_dir, "config.yaml"), self.config_yaml)
        logger = MetricsLogger(
            self.run_dir,
            enabled=self.is_rank0,
            tensorboard=self.use_tensorboard,
            resume_step=self.step if self.resumed_from is not None else None,
        )
        pbar = None
        if self.is_rank0 and self.progress:
            from tqdm.auto import tqdm

            # Redirected to a file (CI, nohup, sbatch), a bar redrawn ten times a second floods the log:
            # redraw every 30 s there instead.
            interactive = sys.stderr.isatty()
            pbar = tqdm(total=self.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                        mininterval=0.1 if interactive else 30.0)

        def say(message: str) -> None:
            if not self.is_rank0:
                return
            if pbar is not None:
                pbar.write(message)
            else:
                log.info(message)

        final: Dict[str, Any] = {}
        stopped_early = False
        last_eval_step: Optional[int] = None
        eval_metrics: Dict[str, float] = {}
        window: Dict[str, float] = {}
        window_start, window_step0 = time.perf_counter(), self.step
        started = time.perf_counter()
        current_len: Optional[int] = None
        batches: Optional[Iterator[Any]] = None
        try:
            while self.step < self.max_steps and not stopped_early:
                wanted_len = self._seq_len_at(self.step)
                if wanted_len != current_len:
                    self.task.set_seq_len(wanted_len)
                    current_len, batches = wanted_len, None  # reopen: prefetched batches have the old length
                if batches is None:
                    batches = self._open_batches()
                info = self._train_step(batches, window)

                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    row = self._reduce_window(window)
                    now = time.perf_counter()
                    row["train/lr"] = info["lr"]
                    row["train/grad_norm"] = info["grad_norm"]
                    if current_len is not None:
                        row["train/seq_len"] = current_len
                    row["perf/steps_per_s"] = (self.step - window_step0) / max(now - window_start, 1e-9)
                    row["time/elapsed_s"] = now - started
                    logger.log(self.step, row)
                    final.update(row)
                    if pbar is not None:
                        pbar.set_postfix(loss=f"{row['train/loss']:.4g}", lr=f"{info['lr']:.3g}", refresh=False)
                    elif self.is_rank0:
                        log.info("step %d loss %.4g lr %.3g", self.step, row["train/loss"], info["lr"])
                    window, window_start, window_step0 = {}, now, self.step
                if pbar is not None:
                    pbar.update(1)

                if self.eval_every > 0 and self.step % self.eval_every == 0:
                    eval_metrics = self._evaluate_and_track(logger, say)
                    last_eval_step = self.step
                    stopped_early = self._reached_early_stop(eval_metrics)
                    if stopped_early:
                        say(f"early stop at step {self.step}: {self.early_stop_metric}="
                            f"{eval_metrics[self.early_stop_metric]:.4g} reached {self.early_stop_threshold}")
                if self.ckpt_every > 0 and self.step % self.ckpt_every == 0 and not stopped_early:
                    self.save(LAST_NAME)

            if last_eval_step != self.step:
                eval_metrics = self._evaluate_and_track(logger, say)
            self.save(LAST_NAME)
        finally:
            if pbar is not None:
                pbar.close()
            logger.close()

        if self.is_rank0:
            try:
                plot_curves(self.run_dir)
            except Exception as exc:  # a plot must never fail a finished run
                log.warning("could not draw the loss curve: %s", exc)
        dist_utils.barrier()
        final.update(eval_metrics)
        final.update(step=self.step, stopped_early=stopped_early, best_metric=self.best_metric, best_step=self.best_step)
        return final

    def _evaluate_and_track(self, logger: MetricsLogger, say) -> Dict[str, float]:
        metrics = self.evaluate()
        if not metrics:
            return metrics
        logger.log(self.step, metrics)
        say(f"step {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        value = metrics.get(self.monitor)
        if value is not None and self._is_better(value):
            self.best_metric, self.best_step = value, self.step
            self.save(BEST_NAME)
        return metrics
