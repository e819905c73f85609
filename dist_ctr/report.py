"""Plots and a text summary of a finished (or running) job, from its files, never from live state.

``render_report(run_dir)`` reads ``<run_dir>/metrics.jsonl`` (written by ``train/observability.py``'s
``RunLogger``) and writes into ``out_dir`` (default ``run_dir``):

- ``loss.png``: training loss against step;
- ``samples_per_s.png``: training throughput against step;
- ``eval_auc.png``: eval AUC against step, one line per task (only when an eval record has an AUC);
- ``summary.txt``: steps, final loss, mean samples/s, the last eval metrics.

Command line: ``dist-ctr report RUN_DIR [--out DIR]`` (``dist_ctr/cli_report.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dist_ctr.errors import DistCtrError
from dist_ctr.train.observability import METRICS_FILE


class RunDirNotFoundError(DistCtrError, FileNotFoundError):
    """No run directory, or no metrics file in it."""


class RunLogError(DistCtrError, ValueError):
    """The run's metrics file is empty or holds a line that is not JSON."""


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl``.

    Args:
        run_dir (str | Path): a run directory (``<output_dir>/<job name>``).

    Returns:
        list[dict[str, Any]]: one dict per line, in file order.

    Raises:
        FileNotFoundError: no run directory or no ``metrics.jsonl`` in it.
        ValueError: the file is empty or a line is not JSON (the message names the file and line).
    """
    path = Path(run_dir) / METRICS_FILE
    if not Path(run_dir).is_dir():
        raise RunDirNotFoundError(f"run directory not found: {run_dir}")
    if not path.is_file():
        raise RunDirNotFoundError(f"no {METRICS_FILE} in {run_dir} (is it a run directory, <output_dir>/<job name>?)")
    records: list[dict[str, Any]] = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise RunLogError(f"{path}:{i}: not a JSON record ({e.msg})") from None
    if not records:
        raise RunLogError(f"{path} has no records (did the run log any step?)")
    return records


def _eval_auc_series(evals: list[dict[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """``{task label: (steps, aucs)}`` from held-out eval records (``auc`` or ``<task>/auc`` keys)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for r in evals:
        for k, v in r.items():
            if k == "auc" or k.endswith("/auc"):
                label = "auc" if k == "auc" else k[: -len("/auc")]
                steps, vals = out.setdefault(label, ([], []))
                steps.append(int(r["step"]))
                vals.append(float(v))
    return out


def summary_text(records: list[dict[str, Any]]) -> str:
    """A short text summary of a run's records.

    Args:
        records (list[dict[str, Any]]): ``read_records`` output.

    Returns:
        str: lines ``steps``, ``final loss``, ``samples/s``, ``eval`` (last held-out eval), ``train``.

    >>> print(summary_text([{"step": 2, "kind": "train", "loss": 0.5, "samples_per_s": 10.0}]))
    steps      2
    final loss 0.5000
    samples/s  10 (mean over 1 logged steps)
    """
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    steps = max(int(r.get("step", 0)) for r in records)
    rows: list[tuple[str, str]] = [("steps", f"{steps:,}")]
    if train:
        rows.append(("final loss", f"{float(train[-1]['loss']):.4f}"))
        sps = [float(r["samples_per_s"]) for r in train if "samples_per_s" in r]
        if sps:
            rows.append(("samples/s", f"{sum(sps) / len(sps):,.0f} (mean over {len(sps)} logged steps)"))
    for split in ("eval", "train"):
        last = [r for r in evals if r.get("split", "eval") == split]
        if last:
            m = {k: v for k, v in last[-1].items() if k not in ("step", "kind", "split")}
            cells = [f"{k} {float(v):.4f}" for k, v in m.items() if k != "eval_rows"]
            if "eval_rows" in m:
                cells.append(f"rows {int(m['eval_rows']):,}")
            rows.append((split if split == "eval" else "train set", "   ".join(cells)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}} {v}" for k, v in rows)


def render_report(run_dir: str | Path, out_dir: str | Path | None = None) -> list[str]:
    """Write the run's plots and ``summary.txt``.

    Args:
        run_dir (str | Path): the run directory holding ``metrics.jsonl``.
        out_dir (str | Path | None): where to write; default ``run_dir``.

    Returns:
        list[str]: paths of the files written (PNGs, then ``summary.txt``).

    Raises:
        FileNotFoundError | ValueError: no run directory / metrics file, or no records (one line naming the path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(run_dir)
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("split", "eval") == "eval"]
    written: list[str] = []

    def plot(name: str, series: dict[str, tuple[list[int], list[float]]], ylabel: str) -> None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, (xs, ys) in series.items():
            ax.plot(xs, ys, marker="o" if len(xs) < 20 else None, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))

    if train:
        steps = [int(r["step"]) for r in train]
        plot("loss.png", {"train loss": (steps, [float(r["loss"]) for r in train])}, "training loss")
        plot("samples_per_s.png", {"samples/s": (steps, [float(r["samples_per_s"]) for r in train])}, "samples/s")
    aucs = _eval_auc_series(evals)
    if aucs:
        plot("eval_auc.png", aucs, "eval AUC")
    summary = out / "summary.txt"
    summary.write_text(summary_text(records) + "\n", encoding="utf-8")
    written.append(str(summary))
    return written
