"""Hydra around the verbs: the configs dir, external config dirs, one run directory per job (also
under torchrun), and the launch itself."""
from __future__ import annotations

import datetime
import importlib.util
import os
import sys
from typing import Any, Callable, List, Optional, Sequence

PROG = "seqmamba"


class CliError(Exception):
    """A user error the CLI reports as one line, without a traceback."""


def configs_dir() -> str:
    """Absolute path of the installed ``seqmamba.configs`` package (editable checkout or wheel)."""
    spec = importlib.util.find_spec("seqmamba.configs")
    if spec is None or not spec.submodule_search_locations:
        raise CliError("cannot find the seqmamba.configs package; is seqmamba installed (pip install -e .)?")
    return os.path.abspath(list(spec.submodule_search_locations)[0])


def external_config_dirs() -> List[str]:
    """``configs/`` folders of the directories in ``$SEQMAMBA_TASK_PATH`` (see notes/task_contract.md)."""
    from seqmamba.plugins import external_task_dirs

    return [os.path.join(d, "configs") for d in external_task_dirs() if os.path.isdir(os.path.join(d, "configs"))]


def config_group_options(group: str) -> List[str]:
    """Option names of a config group, nested folders included (experiment/paper/... -> paper/...),
    from the package's configs and every external config dir."""
    options = set()
    for base in [configs_dir()] + external_config_dirs():
        root = os.path.join(base, group)
        for folder, _, files in os.walk(root):
            for name in files:
                if name.endswith(".yaml"):
                    rel = os.path.relpath(os.path.join(folder, name), root)
                    options.add(rel[: -len(".yaml")].replace(os.sep, "/"))
    return sorted(options)


def searchpath_override() -> List[str]:
    """``hydra.searchpath=[...]`` for the external config dirs (none: no override)."""
    dirs = external_config_dirs()
    if not dirs:
        return []
    return ["hydra.searchpath=[" + ",".join(f"file://{d}" for d in dirs) + "]"]


def compose_config(overrides: Sequence[str]):
    """The run config for ``overrides`` through Hydra's compose API (no job, no run dir)."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=configs_dir(), version_base="1.3"):
        return compose("config", overrides=searchpath_override() + list(overrides))


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


def run_hydra(verb: str, args: List[str], debug: bool, run_job: Callable[[Any], Any]) -> int:
    import hydra

    config_path = configs_dir()
    flags, user_overrides = split_hydra_flags(args)
    extra = _agree_on_launch_time(user_overrides) + searchpath_override()

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
        try:
            app()
            if job_errors:
                raise job_errors[0]
        except Exception as err:
            err.user_overrides = user_overrides  # type: ignore[attr-defined]  (for the closest-key hint)
            raise
    finally:
        sys.argv = saved_argv
        if saved_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_full_error
    return 0


