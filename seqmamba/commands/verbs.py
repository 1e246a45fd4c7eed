"""The verb table: every ``seqmamba <verb>`` is one :class:`Verb` entry, its help line and its job.

A verb with ``hydra=True`` runs inside a Hydra job (``job(cfg, task, run_dir)``, the task built from
``cfg.task.name``); the others take the raw arguments (``seqmamba list``). Adding a verb = adding a row.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from .hydra_app import PROG, CliError, config_group_options


@dataclass(frozen=True)
class Verb:
    name: str
    summary: str
    hydra: bool
    job: Callable[..., Any]
    collective: bool = True  # False: under torchrun only rank 0 works, the others wait


# --------------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------------
def build_task(cfg):
    from seqmamba.tasks import get_task

    return get_task(str(cfg.task.name))(cfg)


def _device(cfg):
    from seqmamba.train.distributed import current_env
    from seqmamba.train.trainer import resolve_device

    return resolve_device(cfg.trainer.get("device"), current_env().local_rank)


def model_from_checkpoint(task, cfg):
    from seqmamba.train.checkpoint import load_model_weights

    path = cfg.get("ckpt")
    if not path:
        raise CliError(f"'{PROG} {cfg.verb}' needs a checkpoint: add ckpt=<path to best.pt or last.pt>")
    model = task.build_model()
    # a missing or foreign file fails there, naming the path; weights of another model name the settings that differ
    load_model_weights(model, str(path), model_cfg=cfg.get("model"))
    return model.to(_device(cfg)).eval()


def write_json(path: str, payload: Any) -> None:
    from seqmamba.atomic_write import atomic_open

    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, default=str)


def save_resolved_config(cfg, run_dir: str) -> None:
    from omegaconf import OmegaConf

    os.makedirs(run_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(run_dir, "config.yaml"), resolve=True)


def summarise(results: Any) -> str:
    if not isinstance(results, dict):
        return str(results)
    lines = []
    for name, value in results.items():
        if isinstance(value, dict):
            lines.append(f"{name}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                                                 for k, v in value.items()))
    return "\n".join(lines)


def evaluate_checkpoint(task, model, cfg, run_dir: str) -> Dict[str, Any]:
    """``task.eval_checkpoint`` at the run's precision (the trainer's own eval uses the same helper)."""
    from seqmamba.train.evaluation import autocast_dtype, evaluation_mode

    dtype = autocast_dtype(cfg.trainer.get("precision", "auto"), next(model.parameters()).device)
    with evaluation_mode(model, dtype):
        return task.eval_checkpoint(model, run_dir)


# --------------------------------------------------------------------------------------------
# the verbs' jobs
# --------------------------------------------------------------------------------------------
def run_verb(cfg, task, run_dir: str) -> Any:
    """Train, then the task's evaluation (``eval_checkpoint``) of the best weights on every rank."""
    from seqmamba.train import Trainer
    from seqmamba.train.checkpoint import load_model_weights
    from seqmamba.train.distributed import barrier, is_rank0

    trainer = Trainer(task, cfg, run_dir)
    final = trainer.fit()
    results: Any = {"train": {k: v for k, v in final.items() if isinstance(v, (int, float, bool, str))}}
    if is_rank0():  # paused or finished: a resumed run's file never keeps an earlier segment's pause
        write_json(os.path.join(run_dir, "train_results.json"), results)
    if final.get("paused"):
        if is_rank0():
            print(f"paused at step {final['step']}; resume: the same command with trainer.resume=auto "
                  f"hydra.run.dir={run_dir}")
        barrier()
        return results
    best = os.path.join(run_dir, "checkpoints", "best.pt")
    model = trainer.model
    if os.path.isfile(best):
        load_model_weights(model, best)
    results["eval"] = evaluate_checkpoint(task, model, cfg, run_dir)
    if is_rank0():
        write_json(os.path.join(run_dir, "eval_results.json"), results)
        print(summarise(results["eval"]))
        print(f"run dir: {run_dir}")
    barrier()
    return results


def eval_verb(cfg, task, run_dir: str) -> Any:
    from seqmamba.train.distributed import is_rank0
    from seqmamba.train.trainer import apply_num_threads

    if is_rank0():
        save_resolved_config(cfg, run_dir)
    apply_num_threads(cfg.trainer.get("num_threads"))
    model = model_from_checkpoint(task, cfg)
    results = evaluate_checkpoint(task, model, cfg, run_dir)
    if is_rank0():
        write_json(os.path.join(run_dir, "eval_results.json"), results)
        print(summarise(results))
        print(f"results written to {run_dir}")
    return results


def generate_verb(cfg, task, run_dir: str) -> Any:
    from seqmamba.train.trainer import apply_num_threads

    save_resolved_config(cfg, run_dir)
    apply_num_threads(cfg.trainer.get("num_threads"))
    if not task.generative:  # refuse before loading anything
        raise CliError(f"task {task.name!r} has no generate verb (it is scored, not sampled); use '{PROG} eval'")
    model = model_from_checkpoint(task, cfg)
    out_dir = str(cfg.get("out_dir") or os.path.join(run_dir, "samples"))
    try:
        result = task.generate(model, out_dir)
    except NotImplementedError as err:
        raise CliError(str(err)) from None
    print(f"samples written to {out_dir}")
    return result


def embed_verb(cfg, task, run_dir: str) -> Any:
    from seqmamba.train.trainer import apply_num_threads

    save_resolved_config(cfg, run_dir)
    apply_num_threads(cfg.trainer.get("num_threads"))
    model = model_from_checkpoint(task, cfg)
    out_path = str(cfg.get("out_dir") or os.path.join(run_dir, "embeddings"))
    try:
        result = task.embed(model, cfg, out_path)
    except NotImplementedError as err:
        raise CliError(str(err)) from None
    print(f"embeddings written to {out_path}")
    return result


def list_verb(args: List[str]) -> int:
    """Registered tasks (unavailable ones with their reason), backbones, datasets, config groups."""
    notes = []
    import seqmamba.tasks as tasks_package

    try:
        import seqmamba.models  # noqa: F401
    except ImportError as err:  # the backbones are part of the package; say so rather than crash `list`
        notes.append(f"seqmamba.models failed to import ({err})")
    from seqmamba.registry import BACKBONES, DATASETS, TASKS

    print(f"tasks:     {', '.join(TASKS.names()) or '(none)'}")
    for name, reason in sorted(tasks_package.UNAVAILABLE.items()):
        print(f"  unavailable: {name} ({reason})")
    print(f"backbones: {', '.join(BACKBONES.names()) or '(none)'}")
    print(f"datasets:  {', '.join(DATASETS.names()) or '(none)'}")
    print("config groups:")
    for group in ("task", "model", "dataset", "optimizer", "scheduler", "trainer", "experiment"):
        print(f"  {group + '/':<12s}{', '.join(config_group_options(group)) or '(none)'}")
    for note in notes:
        print(f"note: {note}")
    return 0


VERBS: Dict[str, Verb] = {v.name: v for v in (
    Verb("run", "train a task, then evaluate its best checkpoint", True, run_verb),
    Verb("eval", "evaluate a checkpoint (ckpt=<path>); induction_heads scores lengths 2^6 .. 2^eval.max_log2_len",
         True, eval_verb),
    Verb("generate", "sample from a checkpoint of a generative task (n_samples=.. out_dir=..)", True,
         generate_verb, collective=False),
    Verb("embed", "write a checkpoint's embeddings of the task's sequences (ckpt=<path> out_dir=..)", True,
         embed_verb, collective=False),
    Verb("list", "registered tasks (and unavailable ones, with the reason), backbones, datasets, config groups",
         False, list_verb),
)}


def run_job(cfg) -> Any:
    """What one Hydra job does for ``cfg.verb``; returns the verb's results."""
    from hydra.core.hydra_config import HydraConfig

    from seqmamba.train.distributed import is_rank0

    verb: Optional[Verb] = VERBS.get(str(cfg.verb))
    if verb is None or not verb.hydra:
        raise CliError(f"unknown verb {cfg.verb!r}; expected one of {', '.join(VERBS)}")
    run_dir = HydraConfig.get().runtime.output_dir
    task = build_task(cfg)
    if not verb.collective and not is_rank0():  # single-process work; extra torchrun ranks idle
        return None
    return verb.job(cfg, task, run_dir)
