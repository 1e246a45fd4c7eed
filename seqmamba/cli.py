"""The ``seqmamba`` command: a Hydra app over ``seqmamba.configs`` plus registry look-ups.

    seqmamba run task=<name> [overrides]        train, then evaluate
    seqmamba eval task=<name> ckpt=<path> [...]  evaluate a checkpoint
    seqmamba generate task=<name> ckpt=<path>    sample (generative tasks)
    seqmamba list                                registered tasks, backbones, datasets

The verb is taken off the command line and handed to Hydra as the ``verb`` config field, so the rest
of the line is plain Hydra: overrides, ``-m`` sweeps, ``--cfg job``, ``hydra.run.dir=...``.

Errors print one line on stderr and exit with status 1 (2 for usage errors); ``--debug`` or
``SEQMAMBA_DEBUG=1`` shows the full traceback instead.
"""
from __future__ import annotations

import datetime
import difflib
import importlib.util
import json
import os
import re
import sys
from typing import Any, List, Optional, Sequence

PROG = "seqmamba"
VERBS = ("run", "eval", "generate", "list")

HELP = f"""\
usage: {PROG} <verb> [hydra overrides] [hydra flags]

verbs:
  run        train a task, then evaluate its best checkpoint
  eval       evaluate a checkpoint (ckpt=<path>); induction_heads scores lengths 2^6 .. 2^eval.max_log2_len
  generate   sample from a checkpoint of a generative task (n_samples=.. out_dir=..)
  list       registered tasks, backbones and datasets, and the config groups

examples:
  {PROG} run task=induction_heads
  {PROG} run task=selective_copying trainer.max_steps=500 trainer.device=cpu seed=1
  {PROG} run experiment=paper/induction_heads trainer.device=cuda
  {PROG} eval task=induction_heads ckpt=outputs/induction_heads/run/<time>/checkpoints/best.pt eval.max_log2_len=20
  {PROG} run -m task=induction_heads seed=0,1,2                  # a Hydra sweep, one dir per job
  {PROG} run task=induction_heads hydra.run.dir=runs/ih           # choose the run directory
  {PROG} run task=induction_heads --cfg job                       # print the composed config, do nothing
  torchrun --nproc_per_node=2 -m seqmamba.cli run task=induction_heads trainer.device=cpu

shared overrides: seed, trainer.max_steps, trainer.device (auto|cpu|cuda), trainer.batch_size,
  hydra.run.dir, ckpt; data paths dataset.fasta, dataset.bed, dataset.species_dir, dataset.root;
  for generate: n_samples, out_dir.
config groups: task/ model/ dataset/ optimizer/ scheduler/ trainer/ experiment/  ({PROG} list shows them)
flags: --debug (or SEQMAMBA_DEBUG=1) shows tracebacks; '{PROG} run --help' shows Hydra's help.
"""


class CliError(Exception):
    """A user error the CLI reports as one line, without a traceback."""


# --------------------------------------------------------------------------------------------
# configs and registries
# --------------------------------------------------------------------------------------------
def configs_dir() -> str:
    """Absolute path of the installed ``seqmamba.configs`` package (editable checkout or wheel)."""
    spec = importlib.util.find_spec("seqmamba.configs")
    if spec is None or not spec.submodule_search_locations:
        raise CliError("cannot find the seqmamba.configs package; is seqmamba installed (pip install -e .)?")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def config_group_options(group: str) -> List[str]:
    """Option names of a config group, nested folders included (experiment/paper/... -> paper/...)."""
    root = os.path.join(configs_dir(), group)
    options = []
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".yaml"):
                rel = os.path.relpath(os.path.join(folder, name), root)
                options.append(rel[: -len(".yaml")].replace(os.sep, "/"))
    return sorted(options)


def import_registered_modules() -> List[str]:
    """Import the modules whose import registers tasks, backbones and datasets.

    Returns notes about optional parts that could not be imported (they never stop the CLI)."""
    notes = []
    import seqmamba.tasks as tasks_package

    for module, reason in getattr(tasks_package, "UNAVAILABLE", {}).items():
        notes.append(f"task module {module!r} unavailable ({reason})")
    try:
        import seqmamba.models  # noqa: F401
    except ImportError as err:  # the backbones are part of the package; say so rather than crash `list`
        notes.append(f"seqmamba.models failed to import ({err})")
    return notes


def list_command() -> int:
    notes = import_registered_modules()
    from seqmamba.registry import BACKBONES, DATASETS, TASKS

    print(f"tasks:     {', '.join(TASKS.names()) or '(none)'}")
    print(f"backbones: {', '.join(BACKBONES.names()) or '(none)'}")
    print(f"datasets:  {', '.join(DATASETS.names()) or '(none)'}")
    print("config groups:")
    for group in ("task", "model", "dataset", "optimizer", "scheduler", "trainer", "experiment"):
        print(f"  {group + '/':<12s}{', '.join(config_group_options(group)) or '(none)'}")
    for note in notes:
        print(f"note: {note}")
    return 0


# --------------------------------------------------------------------------------------------
# one run directory per job, also under torchrun
# --------------------------------------------------------------------------------------------
_LAUNCH_TIME: Optional[datetime.datetime] = None


def register_resolvers(launch_time: Optional[datetime.datetime] = None) -> None:
    """``${launch_time:%Y-%m-%d}`` in configs: the CLI's start time, shared by every rank.

    Hydra's ``${now:...}`` is evaluated per process, so two torchrun ranks could disagree on the run
    directory by a second; rank 0's time is broadcast instead (see ``_agree_on_launch_time``)."""
    global _LAUNCH_TIME
    from omegaconf import OmegaConf

    if launch_time is not None or _LAUNCH_TIME is None:
        _LAUNCH_TIME = launch_time or datetime.datetime.now()
    OmegaConf.register_new_resolver(
        "launch_time", lambda pattern: _LAUNCH_TIME.strftime(pattern), use_cache=False, replace=True
    )


def _wanted_device_type(overrides: Sequence[str]) -> str:
    for item in overrides:
        if item.startswith("trainer.device="):
            value = item.split("=", 1)[1]
            if value in ("cpu", "cuda"):
                return value
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _agree_on_launch_time(overrides: Sequence[str]) -> List[str]:
    """Under torchrun: start the process group, take rank 0's clock, and keep Hydra's own files
    (``.hydra/``, the job log) to rank 0. Returns extra overrides for this rank."""
    from seqmamba.train.distributed import broadcast_object, env_from_torchrun, init_distributed

    if not env_from_torchrun().is_distributed:
        register_resolvers()
        return []
    env = init_distributed(_wanted_device_type(overrides))
    register_resolvers(broadcast_object(datetime.datetime.now() if env.is_rank0 else None))
    if env.is_rank0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=disabled"]


# --------------------------------------------------------------------------------------------
# the verbs, inside the Hydra job
# --------------------------------------------------------------------------------------------
def _build_task(cfg):
    import_registered_modules()
    from seqmamba.tasks import get_task

    return get_task(str(cfg.task.name))(cfg)


def _model_from_checkpoint(task, cfg):
    from seqmamba.train.checkpoint import load_model_weights
    from seqmamba.train.trainer import resolve_device

    path = cfg.get("ckpt")
    if not path:
        raise CliError(f"'{PROG} {cfg.verb}' needs a checkpoint: add ckpt=<path to best.pt or last.pt>")
    model = task.build_model()
    load_model_weights(model, str(path))  # a missing or foreign file fails there, naming the path
    return model.to(resolve_device(cfg.trainer.get("device"))).eval()


def _write_json(path: str, payload: Any) -> None:
    from seqmamba.atomic_write import atomic_open

    with atomic_open(path) as f:
        json.dump(payload, f, indent=2, default=str)


def _save_resolved_config(cfg, run_dir: str) -> None:
    from omegaconf import OmegaConf

    os.makedirs(run_dir, exist_ok=True)
    OmegaConf.save(cfg, os.path.join(run_dir, "config.yaml"), resolve=True)


def run_job(cfg) -> Any:
    """What one Hydra job does for ``cfg.verb``; returns the verb's results."""
    from hydra.core.hydra_config import HydraConfig

    verb = str(cfg.verb)
    run_dir = HydraConfig.get().runtime.output_dir
    task = _build_task(cfg)
    if verb == "run":
        return _train_then_evaluate(task, cfg, run_dir)
    if verb not in ("eval", "generate"):
        raise CliError(f"unknown verb {verb!r}; expected one of {', '.join(VERBS)}")

    from seqmamba.train.distributed import is_rank0
    from seqmamba.train.trainer import apply_num_threads

    if not is_rank0():  # eval and generate are single-process work; extra torchrun ranks idle
        return None
    _save_resolved_config(cfg, run_dir)
    apply_num_threads(cfg.trainer.get("num_threads"))  # for run, the Trainer applies it
    model = _model_from_checkpoint(task, cfg)
    if verb == "eval":
        results = task.eval_checkpoint(model, run_dir)
        _write_json(os.path.join(run_dir, "eval_results.json"), results)
        print(_summarise(results))
        print(f"results written to {run_dir}")
        return results

    out_dir = str(cfg.get("out_dir") or os.path.join(run_dir, "samples"))
    try:
        result = task.generate(model, out_dir)
    except NotImplementedError as err:
        raise CliError(str(err)) from None
    print(f"samples written to {out_dir}")
    return result


def _train_then_evaluate(task, cfg, run_dir: str) -> Any:
    """``seqmamba run``: fit, then the task's evaluation (``eval_checkpoint``) of the best weights
    on rank 0, e.g. the length-extrapolation table of induction heads."""
    import torch

    from seqmamba.train import Trainer
    from seqmamba.train.checkpoint import load_model_weights
    from seqmamba.train.distributed import barrier, is_rank0

    trainer = Trainer(task, cfg, run_dir)
    final = trainer.fit()
    results: Any = {"train": {k: v for k, v in final.items() if isinstance(v, (int, float, bool, str))}}
    if is_rank0():
        best = os.path.join(run_dir, "checkpoints", "best.pt")
        model = trainer.model
        if os.path.isfile(best):
            load_model_weights(model, best)
        model.eval()
        with torch.no_grad():
            results["eval"] = task.eval_checkpoint(model, run_dir)
        _write_json(os.path.join(run_dir, "eval_results.json"), results)
        print(_summarise(results["eval"]))
        print(f"run dir: {run_dir}")
    barrier()
    return results


def _summarise(results: Any) -> str:
    if not isinstance(results, dict):
        return str(results)
    lines = []
    for name, value in results.items():
        if isinstance(value, dict):
            lines.append(f"{name}: " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in value.items()))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# errors as one line
# --------------------------------------------------------------------------------------------
_DROP_LINE = re.compile(r"^(See https?://|object_type=|reference_type=|Set the environment variable HYDRA_FULL_ERROR)")


def one_line_error(err: BaseException) -> str:
    """A readable single line for ``err``: Hydra's multi-line messages are folded, option lists kept."""
    from seqmamba.registry import RegistryError

    if isinstance(err, (CliError, RegistryError)):
        return str(err)
    text = str(err)
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += "\n" + str(cause)
    lines = []
    for raw in text.split("\n"):
        line = raw.strip()
        if line.startswith("Config search path"):
            break
        if line and not _DROP_LINE.match(line):
            lines.append(line)
    message = _fold_option_lists(lines)
    missing = re.search(r"Could not find '([\w/.-]+)/([\w/.-]+)'", message)
    if missing:
        group, name = missing.groups()
        close = difflib.get_close_matches(name, config_group_options(group.split("/")[0]), n=1, cutoff=0.5)
        if close:
            message += f" (did you mean {group}={close[0]}?)"
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, OverrideParseException):
        message = f"bad override {err.override!r}: {message}"

    if not isinstance(err, (HydraException, OmegaConfBaseException, ValueError, FileNotFoundError, NotImplementedError)):
        message = f"{type(err).__name__}: {message}"
    return message or type(err).__name__


def _fold_option_lists(lines: List[str]) -> str:
    """'Available options in 'task':' followed by one option per line -> one clause."""
    out: List[str] = []
    collecting = False
    for line in lines:
        if line.endswith(":") and ("options" in line.lower()):
            out.append(line + " ")
            collecting = True
            continue
        if collecting and re.fullmatch(r"[\w/.-]+", line):
            out[-1] += ("" if out[-1].endswith(": ") else ", ") + line
            continue
        collecting = False
        out.append(line)
    return "; ".join(part.strip() for part in out)


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
# Hydra's flags that take a value (``--info`` takes one only from its list of choices)
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_hydra_flags(args: Sequence[str]):
    """Separate Hydra's command-line flags (with their values) from the overrides, keeping order."""
    flags: List[str] = []
    overrides: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-"):  # overrides never start with "-" (they start with a key, +, ++ or ~)
            flags.append(arg)
            takes_value = arg in _FLAGS_WITH_VALUE or (arg in ("--info", "-i") and i + 1 < len(args)
                                                       and args[i + 1] in _INFO_CHOICES)
            if takes_value and i + 1 < len(args):
                flags.append(args[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def _run_hydra(verb: str, args: List[str], debug: bool) -> int:
    import hydra

    config_path = configs_dir()
    flags, user_overrides = split_hydra_flags(args)
    extra = _agree_on_launch_time(user_overrides)

    job_errors: List[BaseException] = []

    @hydra.main(config_path=config_path, config_name="config", version_base="1.3")
    def app(cfg) -> Any:
        # A failing job is caught here rather than by Hydra, which would print its own report
        # ("Error executing job with overrides ...") before ours; a sweep goes on with its next job.
        try:
            return run_job(cfg)
        except Exception as err:  # noqa: BLE001
            if debug:
                raise
            job_errors.append(err)
            return None

    saved_argv = list(sys.argv)
    saved_full_error = os.environ.get("HYDRA_FULL_ERROR")
    # Hydra prints its own multi-line report unless HYDRA_FULL_ERROR is set; with it set, the
    # exception comes back here and we print one line (or the traceback under --debug).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # Hydra's argparse wants all overrides in one run, so flags go first, then the verb, then the rest
    sys.argv = [PROG] + flags + [f"verb={verb}"] + extra + user_overrides
    try:
        app()
        if job_errors:
            raise job_errors[0]
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("SEQMAMBA_DEBUG", "") not in ("", "0")
    if "--debug" in args:
        args.remove("--debug")
        debug = True
    if not args:
        sys.stderr.write(HELP)
        return 2
    if args[0] in ("-h", "--help", "help"):
        sys.stdout.write(HELP)
        return 0
    if args[0] == "--version":
        from seqmamba import __version__

        print(f"{PROG} {__version__}")
        return 0
    verb = args.pop(0)
    try:
        if verb not in VERBS:
            close = difflib.get_close_matches(verb, VERBS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CliError(f"unknown verb {verb!r}{hint} Verbs: {', '.join(VERBS)} (see '{PROG} --help')")
        if verb == "list":
            return list_command()
        return _run_hydra(verb, args, debug)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # e.g. `seqmamba list | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0
    except Exception as err:  # noqa: BLE001 - the CLI's job is to turn any failure into one line
        if debug:
            raise
        sys.stderr.write(f"{PROG} {verb}: error: {one_line_error(err)}\n")
        return 1
    finally:
        if verb in ("run", "eval", "generate"):
            from seqmamba.train.distributed import destroy_distributed

            destroy_distributed()


def entry_point() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
