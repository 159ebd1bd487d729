"""The command line: one-line errors and non-zero exits on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modularity", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_command() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for command in ("train", "data", "cluster", "importance", "coherence"):
        assert command in out.stdout


def test_threads_option_sets_torch_threads_and_rejects_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from modularity import cli as cli_module

    seen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", seen.append)
    assert cli_module.main(["--threads", "1", "data", "prepare", "nope"]) == 2  # the command's own error
    assert seen == [1]
    out = cli("--threads", "0", "data", "--help")
    assert out.returncode == 2 and "must be at least 1" in out.stderr


@pytest.mark.parametrize("args,message", [
    (("train", "--tag", "NOPE"), "error: unknown tag 'NOPE'"),
    (("train", "--tag", "vgg16"), "error: vgg16 is an ImageNet model"),
    (("data", "prepare", "nope"), "error: unknown dataset 'nope'"),
])
def test_user_errors_are_one_line_with_exit_2(args: tuple[str, ...], message: str) -> None:
    out = cli(*args)
    assert out.returncode == 2
    assert out.stderr.startswith(message)
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.mark.slow  # trains a network
def test_train_cli_writes_both_checkpoints(tmp_path: Path) -> None:
    out = cli("train", "--tag", "DIGITS", "--seed", "1", "--epochs", "1", "--pruning-epochs", "1",
              "--out", str(tmp_path), "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "DIGITS seed 1 pruned" in out.stdout and "sparsity 0.900-0.900" in out.stdout
    assert (tmp_path / "DIGITS" / "seed1" / "pruned.pt").exists()
    assert (tmp_path / "DIGITS" / "seed1" / "unpruned.json").exists()
