"""One naming scheme for every output: network, weights, k and the analysis seed are always in the path.

* Pipeline (``benchmark``): ``<root>/results/<TAG>/seed<S>/<pruned|unpruned>/<analysis>/k<K>.*`` --
  :func:`output_dir` (``benchmark.plan.result_dir`` is ``output_dir(root / "results", ...)``).
* Command line: next to the checkpoint ``<folder>/<TAG-state>.pt`` (or in ``--out``), files and
  folders start with :func:`cli_stem` = ``<checkpoint stem>-k<K>-seed<S>``:
  ``pruned-k12-seed0-labels.csv`` (cluster), ``pruned-k12-seed0-importance.csv`` (importance),
  ``pruned-k12-seed0-coherence/`` (coherence). The checkpoint's folder already names the tag and the
  training seed (``data/checkpoints/<TAG>/seed<S>/``); ``-seed<S>`` is the analysis seed, so reruns
  with another seed never overwrite each other.
"""

from __future__ import annotations

from pathlib import Path


def state(pruned: bool) -> str:
    """``pruned`` or ``unpruned``."""
    return "pruned" if pruned else "unpruned"


def output_dir(root: str | Path, command: str, tag: str, seed: int, pruned: bool, k: int | None = None) -> Path:
    """``<root>/<TAG>/seed<S>/<pruned|unpruned>/<command>`` (``/k<K>`` appended when ``k`` is given)."""
    path = Path(root) / tag / f"seed{int(seed)}" / state(pruned) / command
    return path / f"k{int(k)}" if k is not None else path


def cli_stem(checkpoint: str | Path, k: int, seed: int) -> str:
    """``<checkpoint stem>-k<K>-seed<S>``: how every command-line output next to a checkpoint starts."""
    return f"{Path(checkpoint).stem}-k{int(k)}-seed{int(seed)}"


def cli_output(checkpoint: str | Path, command: str, k: int, seed: int, out: str | Path | None = None) -> Path:
    """``<out or checkpoint folder>/<cli_stem>-<command>``: a command's default output (file stem or folder)."""
    folder = Path(out) if out is not None else Path(checkpoint).parent
    return folder / f"{cli_stem(checkpoint, k, seed)}-{command}"
