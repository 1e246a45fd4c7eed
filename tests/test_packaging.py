"""The wheel carries tasks/ and configs/ inside the one import name, and works from any directory.

DESIGN.md: tasks/ and configs/ must work from a wheel install, not only from an editable checkout.
The test builds the wheel, unpacks it into a bare folder (a wheel is a zip of the installed tree)
and runs the CLI from an unrelated working directory with only that folder on the path.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def copy_of_the_source_tree(dest: Path) -> Path:
    """The files git tracks (or, outside a git checkout, the package folders): setuptools builds in the
    source folder, so building a copy keeps build/ and *.egg-info out of the checkout, and stale files
    from an earlier build out of the wheel."""
    proc = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                          capture_output=True, text=True)
    names = proc.stdout.split() if proc.returncode == 0 else [
        str(p.relative_to(REPO)) for top in ("seqmamba", "tasks", "configs") for p in (REPO / top).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts] + ["pyproject.toml", "setup.py", "README.md"]
    for name in names:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = copy_of_the_source_tree(tmp_path_factory.mktemp("source"))
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, env=env, cwd=source, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(out.glob("seqmamba-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_every_config_and_task(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"seqmamba/configs/{p.relative_to(REPO / 'configs').as_posix()}"
               for p in (REPO / "configs").rglob("*.yaml")}
    tasks = {f"seqmamba/tasks/{p.relative_to(REPO / 'tasks').as_posix()}" for p in (REPO / "tasks").rglob("*.py")}
    assert configs and tasks
    assert configs <= names, f"configs missing from the wheel: {sorted(configs - names)}"
    assert tasks <= names, f"tasks missing from the wheel: {sorted(tasks - names)}"
    assert not any(n.startswith(("tasks/", "configs/")) for n in names), "top-level tasks/ or configs/ leaked"


def test_cli_from_the_unpacked_wheel_in_another_directory(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # only the unpacked wheel (and the venv's third-party packages) on the path, not the checkout
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}
    code = ("import sys; sys.path = [p for p in sys.path if p not in ('', %r)]; "
            "import seqmamba, seqmamba.cli, seqmamba.tasks, seqmamba.configs; "
            "assert all(m.__file__.startswith(%r) for m in (seqmamba, seqmamba.tasks, seqmamba.configs)), "
            "[seqmamba.__file__, seqmamba.tasks.__file__, seqmamba.configs.__file__]; "
            "sys.argv = ['seqmamba', 'list']; seqmamba.cli.main()") % (str(REPO), str(site))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=elsewhere, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "induction_heads" in proc.stdout and "selective_copying" in proc.stdout
    assert "experiment/" in proc.stdout and "paper/induction_heads" in proc.stdout
