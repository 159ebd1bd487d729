"""DVC: prepared datasets and checkpoints survive push to a local remote, cache loss, and pull."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modularity.data import load_arrays, prepare
from modularity.models import load_checkpoint
from modularity.train import train

DVC = str(Path(sys.executable).with_name("dvc"))
REPO = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path) -> str:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_push_delete_cache_pull_restores_everything(tmp_path: Path) -> None:
    work, remote = tmp_path / "work", tmp_path / "remote"
    work.mkdir()
    run("git", "init", "-q", cwd=work)
    run(DVC, "init", "-q", cwd=work)
    prepare("digits", work / "data")
    ckpts = train("DIGITS", 0, out=work / "data" / "checkpoints", epochs=1, pruning_epochs=1, progress=False)
    run(DVC, "add", "-q", "data/datasets", "data/checkpoints", cwd=work)
    run(DVC, "remote", "add", "-d", "tmp", str(remote), cwd=work)
    run(DVC, "push", "-q", cwd=work)
    before = {p: p.read_bytes() for p in (work / "data").rglob("*") if p.is_file() and "raw" not in p.parts}
    shutil.rmtree(work / ".dvc" / "cache")
    shutil.rmtree(work / "data" / "datasets")
    shutil.rmtree(work / "data" / "checkpoints")
    run(DVC, "pull", "-q", cwd=work)
    after = {p: p.read_bytes() for p in (work / "data").rglob("*") if p.is_file() and "raw" not in p.parts}
    assert after == before
    load_arrays("digits", work / "data", prepare_missing=False)  # checksums verified
    model, meta = load_checkpoint(ckpts["pruned"])
    assert meta["tag"] == "DIGITS" and isinstance(model, torch.nn.Module)


def test_repository_tracks_the_prepared_datasets_in_data_dvc() -> None:
    text = (REPO / "data.dvc").read_text()
    assert "path: data/datasets" in text and ".dir" in text
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ../.dvc-remote" in config


@pytest.mark.slow
def test_data_dvc_hash_matches_freshly_prepared_data(tmp_path: Path) -> None:
    """`make data` on any machine produces the bytes whose hash data.dvc records.

    DVC hashes the freshly prepared folder in a scratch repository (hard links, no copy), and the
    hash must equal the one committed in data.dvc.
    """
    for name in ("mnist", "fashion", "digits"):
        load_arrays(name)
    run("git", "init", "-q", cwd=tmp_path)
    run(DVC, "init", "-q", cwd=tmp_path)
    source = REPO / "data" / "datasets"
    for path in source.rglob("*"):
        target = tmp_path / "data" / "datasets" / path.relative_to(source)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:  # another file system
                shutil.copyfile(path, target)
    run(DVC, "add", "-q", "--no-commit", "data/datasets", cwd=tmp_path)
    fresh = (tmp_path / "data" / "datasets.dvc").read_text().split("md5: ")[1].split()[0]
    committed = (REPO / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert fresh == committed
