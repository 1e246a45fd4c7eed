"""Metrics to disk: ``metrics.jsonl`` (the source of truth), ``metrics.csv`` and TensorBoard events.

Every ``log(step, values)`` call is one JSON line ``{"step": s, **values}`` and one CSV row. The CSV is
wide (one column per metric name); when a row brings a new name, the file is rewritten from the
JSONL with the grown header (atomically, through ``atomic_open``), otherwise the row is appended. On
resume, rows logged after the checkpoint's step (by the run that crashed) are dropped, so a resumed
run's files read as if the run had never stopped; a run directory that kept only its CSV (a recorded run copied
without the JSONL) resumes from the CSV's rows instead of starting the history afresh.

``plot_curves(run_dir)`` draws ``loss_curve.png`` from the JSONL (matplotlib's Agg canvas, no display).
"""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from seqmamba.atomic_write import atomic_open, atomic_write_text

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
PLOT_NAME = "loss_curve.png"


def read_metrics(run_dir: str) -> List[Dict[str, Any]]:
    """All rows of ``run_dir/metrics.jsonl`` (a torn last line from a crash is skipped)."""
    path = os.path.join(run_dir, JSONL_NAME)
    rows: List[Dict[str, Any]] = []
    if not os.path.isfile(path):
        return rows
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _parse_cell(cell: str) -> Any:
    """A CSV cell as the JSONL held it: int, else float (repr round-trips), else the text."""
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def read_metrics_csv(path: str) -> List[Dict[str, Any]]:
    """The rows of a metrics.csv, numbers parsed, empty cells left out. A row whose step is not an integer is a
    ValueError naming the file, the line and the value (resuming past it would misplace the history)."""
    rows: List[Dict[str, Any]] = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            parsed: Dict[str, Any] = {}
            for key, cell in row.items():
                if key is None or cell is None or cell == "":
                    continue
                parsed[key] = _parse_cell(cell)
                if key == "step" and not isinstance(parsed[key], int):
                    raise ValueError(f"{path}, line {reader.line_num}: step {cell!r} is not an integer")
            if "step" not in parsed:
                raise ValueError(f"{path}, line {reader.line_num}: no step")
            rows.append(parsed)
    return rows


def _to_number(value: Any) -> Any:
    if hasattr(value, "item"):  # 0-d tensors / numpy scalars
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)) or value is None:
        return value
    raise TypeError(f"metric value {value!r} of type {type(value).__name__} is not a number")


class MetricsLogger:
    """Writes metrics rows; ``enabled=False`` (ranks other than 0) makes every method a no-op."""

    def __init__(self, run_dir: str, enabled: bool = True, tensorboard: bool = True, resume_step: Optional[int] = None):
        self.run_dir = run_dir
        self.enabled = enabled
        self._columns: List[str] = ["step"]
        self._writer = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self.jsonl_path = os.path.join(run_dir, JSONL_NAME)
        self.csv_path = os.path.join(run_dir, CSV_NAME)
        rows = read_metrics(run_dir)
        if resume_step is None:
            rows = []  # a fresh run in a reused directory starts fresh files
        else:
            if not rows and not os.path.isfile(self.jsonl_path) and os.path.isfile(self.csv_path):
                rows = read_metrics_csv(self.csv_path)  # the history was kept as CSV only
            rows = [r for r in rows if r.get("step", 0) <= resume_step]
        self._rewrite(rows)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import; only when used

            # purge_step hides events a crashed run wrote after the checkpoint we resume from
            self._writer = SummaryWriter(
                os.path.join(run_dir, TENSORBOARD_DIR), purge_step=(resume_step + 1) if resume_step else None
            )

    # -- files --------------------------------------------------------------------------------------
    def _rewrite(self, rows: List[Dict[str, Any]]) -> None:
        columns = ["step"]
        for row in rows:
            columns += [k for k in row if k not in columns]
        self._columns = columns
        atomic_write_text(self.jsonl_path, "".join(json.dumps(r) + "\n" for r in rows))
        with atomic_open(self.csv_path, newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, step: int, values: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        row: Dict[str, Any] = {"step": int(step)}
        row.update({k: _to_number(v) for k, v in values.items()})
        with open(self.jsonl_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if any(k not in self._columns for k in row):
            self._rewrite(read_metrics(self.run_dir))
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)
        if self._writer is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, global_step=int(step))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def plot_curves(run_dir: str, out_name: str = PLOT_NAME) -> Optional[str]:
    """Plot losses (left) and other held-out metrics (right) against step; returns the PNG path,
    or None when there is nothing to plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_metrics(run_dir)
    series: Dict[str, List[tuple]] = {}
    for row in rows:
        for key, value in row.items():
            if key == "step" or not isinstance(value, (int, float)) or not math.isfinite(value):
                continue
            if key.endswith("/loss") or (not key.startswith(("train/", "perf/", "time/")) and "/" in key):
                series.setdefault(key, []).append((row["step"], value))
    losses = {k: v for k, v in series.items() if k.endswith("/loss")}
    others = {k: v for k, v in series.items() if not k.endswith("/loss")}
    if not losses and not others:
        return None

    panels = [p for p in (losses, others) if p]
    fig = Figure(figsize=(6 * len(panels), 4), dpi=100)
    FigureCanvasAgg(fig)
    for index, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), index + 1)
        for key, points in sorted(panel.items()):
            steps, values = zip(*points)
            ax.plot(steps, values, label=key, marker="." if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_ylabel("loss" if panel is losses else "metric")
        loss_values = [v for pts in losses.values() for _, v in pts]
        if panel is losses and min(loss_values) > 0 and max(loss_values) / min(loss_values) > 20:
            ax.set_yscale("log")  # only when losses span orders of magnitude; else ticks get unreadable
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = os.path.join(run_dir, out_name)
    fig.savefig(path)
    return path
