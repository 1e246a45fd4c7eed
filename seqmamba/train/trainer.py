"""The training loop shared by every task.

API::

    trainer = Trainer(task, cfg, run_dir)   # builds model/optimizer/schedule, resumes if asked
    final = trainer.fit()                    # -> dict of final metrics
    metrics = trainer.evaluate()             # -> {"<val set>/<metric>": float}

``cfg`` is an OmegaConf DictConfig or a plain dict; every key is optional. ``trainer.*`` keys, their
defaults and what each accepts are in :mod:`seqmamba.train.settings` (``TrainerSettings``, the one
place the defaults live; ``configs/trainer/default.yaml`` mirrors it). Also read: ``seed`` [0],
``ckpt`` [null: a checkpoint to resume from], ``optimizer.*`` (through ``task.configure_optimizer``,
default :func:`seqmamba.train.optim.build_optimizer`) and ``scheduler.*`` (``schedule.py``).

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
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from . import distributed as dist_utils
from seqmamba.atomic_write import atomic_write_text, remove_stale_temp_files
from seqmamba.config_checks import config_get, section
from seqmamba.cuda_graphs import side_stream

from . import cuda_graph as graphs
from .checkpoint import atomic_torch_save, load_model_weights, make_checkpoint
from .evaluation import add_sums, autocast, autocast_dtype, evaluate_sets
from .run_log import MetricsLogger, plot_curves
from .schedule import build_scheduler
from .seeding import capture_rng_state, restore_rng_state, seed_everything
from .settings import TrainerSettings, parse_seq_len_warmup  # noqa: F401  (parse_seq_len_warmup re-exported)

log = logging.getLogger("seqmamba.train")

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, exhausted data). ``str()`` is one line for the CLI."""


# -- small helpers -------------------------------------------------------------------------------------
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


#: kept for callers of the old name
resolve_precision = autocast_dtype


class Trainer:
    """Drives a :class:`tasks.base.Task`; see the module docstring for the config keys."""

    def __init__(self, task: Any, cfg: Any, run_dir: str):
        self.task = task
        if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
            cfg = OmegaConf.create(dict(cfg))
        if not isinstance(cfg, DictConfig):
            raise TypeError(f"cfg must be an OmegaConf DictConfig or a dict, got {type(cfg).__name__}")
        self.cfg = cfg
        self.run_dir = os.path.abspath(str(run_dir))
        self.ckpt_dir = os.path.join(self.run_dir, CHECKPOINT_DIR)
        self.config_yaml = _config_yaml(self.cfg)

        # every trainer.* value is checked here, before anything is built (see settings.py)
        self.settings = s = TrainerSettings.from_config(self.cfg)
        self.seed = int(config_get(self.cfg, "seed", 0))
        self.max_steps, self.grad_accum_steps, self.grad_clip = s.max_steps, s.grad_accum_steps, s.grad_clip
        self.log_every, self.eval_every, self.ckpt_every = s.log_every, s.eval_every, s.ckpt_every
        self.progress, self.use_tensorboard = s.progress, s.tensorboard
        self.seq_len_schedule = s.seq_len_warmup
        if self.seq_len_schedule and not task.supports_seq_len_warmup:
            raise ValueError(f"trainer.seq_len_warmup is set but task {type(task).__name__} does not support it "
                             f"(no set_seq_len; supports_seq_len_warmup is false)")
        self.monitor = str(task.monitor)
        self.monitor_mode = str(task.monitor_mode)
        if self.monitor_mode not in ("min", "max"):
            raise ValueError(f"task.monitor_mode={self.monitor_mode!r} must be 'min' or 'max'")
        self.early_stop_metric, self.early_stop_threshold = s.early_stop_metric, s.early_stop_threshold
        default_mode = self.monitor_mode if self.early_stop_metric == self.monitor else "max"
        self.early_stop_mode = s.early_stop_mode or default_mode

        # -- processes and device ------------------------------------------------------------------
        requested = s.device
        device_type = "cuda" if requested.startswith("cuda") or (requested == "auto" and torch.cuda.is_available()) else "cpu"
        self.dist_env = dist_utils.init_distributed(device_type)
        self.rank, self.world_size = self.dist_env.rank, self.dist_env.world_size
        self.is_rank0 = self.dist_env.is_rank0
        self.device = resolve_device(requested, self.dist_env.local_rank)
        apply_num_threads(s.num_threads)
        if s.deterministic:  # process-wide, as PyTorch's switch is; cuBLAS needs its workspace setting first
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self.autocast_dtype = autocast_dtype(s.precision, self.device)

        # -- model, optimizer, schedule ------------------------------------------------------------
        seed_everything(self.seed)  # identical initial weights on every rank
        self.model: nn.Module = task.build_model().to(self.device)
        if s.activation_checkpointing:
            hook = getattr(self.model, "set_activation_checkpointing", None)
            if not callable(hook):
                raise ValueError(f"trainer.activation_checkpointing=true is not supported by model "
                                 f"{type(self.model).__name__} (it has no set_activation_checkpointing); set it false")
            hook(True)
        if self.dist_env.is_distributed:
            # distinct dropout/sampling streams per rank (rank 0 keeps the plain seed)
            seed_everything(self.seed + 1_000_003 * self.rank)

        # -- CUDA graphs (trainer.cuda_graph) --------------------------------------------------------
        self.use_cuda_graph = False
        if s.cuda_graph != "false":
            reason = graphs.unsupported_reason(
                device=self.device, world_size=self.world_size, grad_accum_steps=self.grad_accum_steps,
                autocast_dtype=self.autocast_dtype)
            if reason is not None and s.cuda_graph == "true":
                raise ValueError(f"trainer.cuda_graph=true cannot be used: {reason}; set it false or auto")
            if reason is not None and self.is_rank0 and self.device.type == "cuda":  # on a CPU nobody expects graphs
                log.info("trainer.cuda_graph=auto: training eagerly, as %s", reason)
            self.use_cuda_graph = reason is None
        # trainer.compile: auto compiles where the step is graphed (the small models, where it was measured)
        self.compiled = s.compile == "true" or (s.compile == "auto" and self.use_cuda_graph)
        train_model = torch.compile(self.model) if self.compiled else self.model
        self.train_model = dist_utils.wrap_ddp(train_model, self.device, s.ddp_find_unused_parameters)
        self.optimizer = task.configure_optimizer(self.model, self.device.type)
        self.scheduler = build_scheduler(self.optimizer, section(self.cfg, "scheduler"), self.max_steps)
        self.grad_scaler = torch.amp.GradScaler("cuda", enabled=self.autocast_dtype == torch.float16)
        self._graph: Optional[graphs.GraphedTrainStep] = None  # built at the first captured step
        self._warm_signature: Any = None
        self._warm_shapes: Any = None
        self._warm_steps = 0
        self._warned_leaf_values = False

        self.step = 0
        self.best_metric: Optional[float] = None
        self.best_step: Optional[int] = None
        self.resumed_from: Optional[str] = None
        ckpt_path = self._resume_path()
        if ckpt_path is not None:
            self.load(ckpt_path)

    # -- checkpoints --------------------------------------------------------------------------------
    def _resume_path(self) -> Optional[str]:
        explicit = config_get(self.cfg, "ckpt", None)
        if explicit:  # a missing file is reported by load_checkpoint
            return os.path.abspath(os.path.expanduser(str(explicit)))
        if not self.settings.resume:
            return None
        last = os.path.join(self.ckpt_dir, LAST_NAME)
        return last if os.path.isfile(last) else None

    def load(self, path: str) -> None:
        """Restore the full training state from ``path`` (every rank reads the same file)."""
        ckpt = load_model_weights(self.model, path, model_cfg=config_get(self.cfg, "model", None))
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
        contributes its RNG state); rank 0 writes. Graphed steps not checked yet are checked first."""
        self._settle_graphed_steps()
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
        if self._graph is not None:  # a plain state, loadable by eager and CPU runs
            ckpt["optimizer"] = self._graph.plain_optimizer_state(ckpt["optimizer"])
            ckpt["scheduler"] = self._graph.plain_scheduler_state(ckpt["scheduler"])
        path = os.path.join(self.ckpt_dir, name)
        atomic_torch_save(ckpt, path)
        return path

    # -- evaluation ---------------------------------------------------------------------------------
    def _autocast(self):
        """The training step's autocast. A graphed run's eager steps (the warmup before each capture) use the
        capture's (no cast cache, which would keep the first graph pool's casts): under ``trainer.compile`` the
        compiled frames guard on that flag, and a guard that failed at the capture would recompile inside it."""
        return autocast(self.device, self.autocast_dtype, cache_enabled=not self.use_cuda_graph)

    def evaluate(self) -> Dict[str, float]:
        """Every ``task.val_sets()`` entry through ``task.evaluate``; ``{"<set>/<metric>": value}``.
        Collective under DDP: each rank evaluates its share of every set, all get the totals."""
        return evaluate_sets(self.task, self.model, self.autocast_dtype)

    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_metric is None:
            return True
        # a tie goes to the later weights: once val/acc saturates at 1.0 (induction heads at its training
        # length), best.pt keeps following training instead of freezing at the first perfect checkpoint,
        # which extrapolates worst (notes/extrapolation.md)
        return value <= self.best_metric if self.monitor_mode == "min" else value >= self.best_metric

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

    def _next_batch(self, batches: Iterator[Any], step_number: int, micro: int) -> Any:
        try:
            return next(batches)
        except StopIteration:
            raise TrainingError(
                f"task.train_batches ran out at step {step_number} (micro-batch {micro}); it must be infinite"
            ) from None

    def _stop_if_nonfinite(self, step_number: int, n_bad: float, grad_norm: float, losses: List[Any]) -> None:
        if n_bad > 0:
            values = [float(v) for v in losses]
            raise TrainingError(
                f"non-finite training loss at step {step_number} on {int(n_bad)} micro-batch(es) "
                f"(this rank's losses: {values}); stopped, the last good checkpoint is kept")
        if not math.isfinite(grad_norm) and not self.grad_scaler.is_enabled():
            raise TrainingError(
                f"non-finite gradient norm {grad_norm} at step {step_number} (loss {[float(v) for v in losses]}); "
                "stopped before the update, the last good checkpoint is kept"
            )

    def _step(self, batches: Iterator[Any], sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimizer step, eager or (``trainer.cuda_graph``) replayed from CUDA graphs. A batch
        shape seen for the first time gets ``graphs.WARMUP_STEPS`` eager steps on a side stream
        before it is captured."""
        if not self.use_cuda_graph:
            return self._train_step(batches, sums)
        batch = self._next_batch(batches, self.step + 1, 0)
        signature = graphs.batch_signature(batch)
        if signature != self._warm_signature:
            shapes = graphs.batch_signature(batch, leaf_values=False)
            if shapes == self._warm_shapes and not self._warned_leaf_values:
                self._warned_leaf_values = True
                log.warning("trainer.cuda_graph: a non-tensor value in the training batch changed at step %d; "
                            "each change means eager steps and a new capture (keep batch values in tensors)",
                            self.step + 1)
            self._warm_signature, self._warm_shapes, self._warm_steps = signature, shapes, 0
        if self._warm_steps < graphs.WARMUP_STEPS:
            self._warm_steps += 1
            self._settle_graphed_steps()  # an eager step's update must not follow an unchecked graphed one
            with side_stream(self.device):
                return self._train_step(iter([batch]), sums)
        return self._graphed_train_step(batch, signature, sums)

    def _graphed_train_step(self, batch: Any, signature: Any, sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        step_number = self.step + 1
        self.train_model.train()
        if self._graph is None:
            self._graph = graphs.GraphedTrainStep(
                model=self.train_model, optimizer=self.optimizer, training_step=self.task.training_step,
                move_to=self.task.move_to, grad_clip=self.grad_clip, device=self.device,
                autocast=self._autocast)
        g = self._graph
        g.forward_backward(batch, signature)
        # the graph's outputs are overwritten by the next replay: the window keeps copies
        add_sums(sums, {"loss": g.loss.clone(), "_count": 1.0, "_tokens": float(self.task.batch_tokens(batch))})
        add_sums(sums, {k: v.clone() for k, v in g.metrics.items() if k != "loss"})
        g.record(step_number)
        # Where the update skips a non-finite step on the device, this step's values are checked at the next
        # step (or log / eval / checkpoint) and the previous step's here, before this update is launched, while the
        # GPU runs on; otherwise this step's, now (the host waits for the graph).
        info = self._settle_graphed_steps(keep_latest=g.skips_nonfinite)
        g.update()
        self.scheduler.step()
        self.step = step_number
        return info

    def _settle_graphed_steps(self, keep_latest: bool = False) -> Dict[str, float]:
        """Check the graphed steps whose values were not read yet (all, or all but the newest): a non-finite one
        stops the run (its update was skipped on the device, later ones were not launched). Returns the newest
        checked step's lr and grad norm ({} when none was pending)."""
        info: Dict[str, float] = {}
        if self._graph is None:
            return info
        for step, loss, grad_norm, lr in self._graph.settle(keep_latest):
            self._stop_if_nonfinite(step, float(not math.isfinite(loss)), grad_norm, [loss])
            info = {"lr": lr, "grad_norm": grad_norm}
        return info

    def _train_step(self, batches: Iterator[Any], sums: Dict[str, torch.Tensor]) -> Dict[str, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches. Adds this rank's metric sums
        to ``sums`` as device tensors (the micro-batch count under ``"_count"``), so nothing waits
        for the device per micro-batch; one host sync per step checks the losses and the grad norm.
        Returns lr and grad norm."""
        step_number = self.step + 1
        self.train_model.train()
        self.optimizer.zero_grad(set_to_none=True)
        losses: List[torch.Tensor] = []
        for micro in range(self.grad_accum_steps):
            batch = self.task.move_to(self._next_batch(batches, step_number, micro), self.device)
            last_micro = micro == self.grad_accum_steps - 1
            no_sync = self.dist_env.is_distributed and not last_micro
            with (self.train_model.no_sync() if no_sync else contextlib.nullcontext()):
                with self._autocast():
                    loss, metrics = self.task.training_step(self.train_model, batch)
                self.grad_scaler.scale(loss / self.grad_accum_steps).backward()
            losses.append(loss.detach().float())
            add_sums(sums, {"loss": losses[-1], "_count": 1.0, "_tokens": float(self.task.batch_tokens(batch))})
            add_sums(sums, {k: v for k, v in metrics.items() if k != "loss"})  # loss counted from the returned one

        # Non-finite losses stop the run before the optimizer applies anything; every rank must
        # agree to stop, or the others would hang in the next collective.
        nonfinite = (~torch.isfinite(torch.stack(losses))).sum().to(torch.float64)
        if self.dist_env.is_distributed:
            nonfinite = dist_utils.all_reduce_tensor_sums({"n": nonfinite})["n"]
        if self.grad_scaler.is_enabled():
            self.grad_scaler.unscale_(self.optimizer)
        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm_t = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        n_bad, grad_norm = torch.stack([nonfinite.to(grad_norm_t.device), grad_norm_t.double()]).tolist()
        self._stop_if_nonfinite(step_number, n_bad, grad_norm, losses)
        lr = float(self.optimizer.param_groups[0]["lr"])
        self.grad_scaler.step(self.optimizer)  # plain optimizer.step() when the scaler is disabled
        self.grad_scaler.update()
        self.scheduler.step()
        self.step = step_number
        return {"lr": lr, "grad_norm": grad_norm}

    def _reduce_window(self, sums: Dict[str, torch.Tensor], seconds: float) -> Dict[str, float]:
        """Mean training metrics over the window and ranks, and the tokens/s of all ranks together."""
        totals = dist_utils.all_reduce_tensor_sums(sums)
        count = max(float(totals.pop("_count", 1.0)), 1.0)
        tokens = float(totals.pop("_tokens", 0.0))
        row = {f"train/{k}": float(v) / count for k, v in totals.items()}
        row["perf/tokens_per_s"] = tokens / seconds
        return row

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
        window: Dict[str, torch.Tensor] = {}
        window_start, window_step0 = time.perf_counter(), self.step
        started = time.perf_counter()
        current_len: Optional[int] = None
        batches: Optional[Iterator[Any]] = None
        paused = False
        try:
            while self.step < self.max_steps and not stopped_early:
                wanted_len = self._seq_len_at(self.step)
                if wanted_len != current_len:
                    self.task.set_seq_len(wanted_len)
                    current_len, batches = wanted_len, None  # reopen: prefetched batches have the old length
                if batches is None:
                    batches = self._open_batches()
                info = self._step(batches, window)

                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    info = {**info, **self._settle_graphed_steps()}  # a graphed step's values come a step late
                    now = time.perf_counter()
                    elapsed = max(now - window_start, 1e-9)
                    row = self._reduce_window(window, elapsed)
                    row["train/lr"] = info["lr"]
                    row["train/grad_norm"] = info["grad_norm"]
                    if current_len is not None:
                        row["train/seq_len"] = current_len
                    row["perf/steps_per_s"] = (self.step - window_step0) / elapsed
                    if self.device.type == "cuda":  # this rank's peak since the start (rank 0's is logged)
                        row["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(self.device) / 1e9
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
                if self.step < self.max_steps and not stopped_early and self._pause_now(started):
                    paused = True
                    break

            if paused:
                say(f"paused at step {self.step} of {self.max_steps} ({self._pause_reason}); last.pt written, "
                    f"no final evaluation; continue with trainer.resume=auto and the same run dir")
            elif last_eval_step != self.step:
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
        final.update(step=self.step, stopped_early=stopped_early, paused=paused, best_metric=self.best_metric,
                     best_step=self.best_step)
        return final

    def _pause_now(self, started: float) -> bool:
        """``trainer.stop_at_step`` reached, or ``trainer.time_limit_s`` passed on rank 0's clock (the
        decision is broadcast so every rank stops after the same step)."""
        s = self.settings
        if s.stop_at_step is not None and self.step >= s.stop_at_step:
            self._pause_reason = f"trainer.stop_at_step={s.stop_at_step}"
            return True
        if s.time_limit_s is None:
            return False
        over = float(time.perf_counter() - started >= s.time_limit_s)
        if self.dist_env.is_distributed:
            over = dist_utils.broadcast_object(over)
        if over:
            self._pause_reason = f"trainer.time_limit_s={s.time_limit_s:g}"
        return bool(over)

    def _evaluate_and_track(self, logger: MetricsLogger, say) -> Dict[str, float]:
        self._settle_graphed_steps()  # no evaluation of weights whose last step is unchecked
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
