"""CI regression check: the smoke profile, run for real, against benchmark/expected/smoke/.

Trains the smoke networks (a few thousand images, one epoch), runs every stage in this process into a
temporary folder, compares every table with the paper (verdicts are not asserted: the smoke networks
are far too small to match it) and checks every network-level value against the stored expected
values (exact integers, floats to their stored digits). `make update-expected` rewrites them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `benchmark` is not installed

from benchmark import plan, reproduce  # noqa: E402


@pytest.mark.slow
def test_smoke_profile_reproduces_its_expected_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = reproduce.reproduce("smoke", root=tmp_path / "run", report_dir=tmp_path / "report", use_dvc=False,
                                 check_expected=True, progress=False)
    err = capsys.readouterr().err
    assert status == 0, f"smoke results differ from benchmark/expected/smoke (make update-expected if on purpose):\n{err}"
    # Every planned row ran (nothing silently missing) and the report exists.
    p = plan.plan(plan.load_profile("smoke"), plan.load_tables())
    for table in p.tables:
        rows = pd.read_csv(tmp_path / "report" / "tables" / f"{table.name}.csv")
        assert "not run" not in set(rows["row_verdict"]), table.name
    assert (tmp_path / "report" / "summary.md").is_file()


def _run(cmd: list[str], cwd: Path) -> str:
    import os
    import subprocess

    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_pull_from_a_local_remote_restores_checkpoints_and_skips_training(tmp_path: Path) -> None:
    """Train once in a clone, push to a local remote; a second clone pulls and DVC skips training."""
    import shutil

    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = Path(__file__).resolve().parents[1]
    datasets = repo / "data" / "datasets" / "mnist"
    if not (datasets / "manifest.json").is_file():
        pytest.skip("MNIST is not prepared (make data)")
    dvc = [sys.executable, "-m", "dvc"]
    stage = "train@smoke-MNIST-s0"
    remote = tmp_path / "remote"
    clones = []
    for name in ("a", "b"):
        clone = tmp_path / name
        _run(["git", "clone", "-q", str(tmp_path / "a") if clones else str(repo), str(clone)], tmp_path)
        (clone / "data" / "datasets").mkdir(parents=True)
        (clone / "data" / "datasets" / "mnist").symlink_to(datasets)
        _run([*dvc, "remote", "add", "--local", "-d", "test", str(remote)], clone)
        if not clones:
            _run([*dvc, "repro", "--single-item", stage], clone)
            _run([*dvc, "push", stage], clone)
            _run(["git", "add", "dvc.lock"], clone)
            _run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "lock", "dvc.lock"], clone)
        clones.append(clone)
    b = clones[1]
    assert not (b / "data/benchmark/smoke/checkpoints/MNIST/seed0/pruned.pt").exists()
    _run([*dvc, "pull", stage], b)
    assert (b / "data/benchmark/smoke/checkpoints/MNIST/seed0/pruned.pt").is_file()
    out = _run([*dvc, "repro", "--single-item", stage], b)
    assert "didn't change, skipping" in out and "Running stage" not in out
