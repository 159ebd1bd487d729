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
    assert "remote" not in config  # a fresh clone has none: `dvc pull` / `make pull` say how to add one


def test_pull_without_a_remote_says_what_to_do_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmark import reproduce

    repo = tmp_path / ("a" * 80)  # a long path: `dvc remote list` wraps such a table, `dvc config` does not
    repo.mkdir()
    run("git", "init", "-q", cwd=repo)
    run(DVC, "init", "-q", cwd=repo)
    assert reproduce.remote_problem(repo) == "no DVC remote is configured"
    run(DVC, "config", "core.remote", "ghost", cwd=repo)
    assert reproduce.remote_problem(repo) == "the default DVC remote 'ghost' is not defined"
    run(DVC, "remote", "add", "-d", "lab", "missing", cwd=repo)  # stored relative to .dvc/
    assert reproduce.remote_problem(repo) == f"the DVC remote 'lab' is the folder {repo / 'missing'}, which does not exist"
    (repo / "missing").mkdir()
    assert reproduce.remote_problem(repo) is None
    if reproduce.remote_problem() is not None:  # this clone has no remote: the wrapper refuses with one line
        assert reproduce.main(["--pull"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "dvc remote add -d" in err


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


# --------------------------------------------------------------------------------------------------
# The pipeline's dependencies come from the import graph


def test_every_stage_of_dvc_yaml_depends_on_the_seeding_code() -> None:
    import yaml

    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    for name, stage in doc["stages"].items():
        assert "modularity/utils.py" in stage["do"]["deps"], name  # rng_for: the seeding of every stage
        assert "benchmark/stages.py" in stage["do"]["deps"] or name == "report", name


def test_import_graph_follows_lazy_imports_and_skips_other_stages(tmp_path: Path) -> None:
    from benchmark import dvcgen

    files = {
        "modularity/__init__.py": "from .a import f\n",
        "modularity/a.py": "def f():\n    from modularity import b\n    return b\n",
        "modularity/b.py": "import numpy\n",
        "modularity/c.py": "",
        "modularity/d.py": "",
        "benchmark/__init__.py": "",
        "benchmark/plan.py": "",
        "benchmark/stages.py": ("from .plan import *\n\n\ndef helper():\n    import modularity.d\n\n\n"
                                "def train_stage():\n    helper()\n\n\n"
                                "def cluster_stage():\n    from modularity import c\n\n\n"
                                "def main():\n    return {'train': train_stage, 'cluster': cluster_stage}\n"),
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    train = dvcgen.code_deps("train", repo=tmp_path)
    assert train == ["benchmark/__init__.py", "benchmark/plan.py", "benchmark/stages.py", "modularity/__init__.py",
                     "modularity/a.py", "modularity/b.py", "modularity/d.py"]
    assert "modularity/c.py" in dvcgen.code_deps("cluster", repo=tmp_path)
    assert "modularity/d.py" not in dvcgen.code_deps("cluster", repo=tmp_path)


RECORD = """
import json, runpy, sys
sys.argv = ["benchmark.stages", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("benchmark.stages", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
print("MODULES=" + json.dumps(sorted({getattr(m, "__file__", None) or "" for m in list(sys.modules.values())})))
sys.exit(code)
"""


@pytest.mark.slow
def test_every_module_a_stage_loads_is_among_its_dvc_deps(tmp_path: Path) -> None:
    """Run each kind of stage for real (a DIGITS MLP, tiny settings) and compare what it imported with its deps."""
    import json

    import yaml

    from benchmark import dvcgen

    tiny = {"threads": 1, "graph": {"conv_norm": "entrywise", "fold_batchnorm": True},
            "train": {"default": {"epochs": 1, "pruning_epochs": 1}},
            "cluster": {"default": {"n_shuffles": 1, "n_jobs": 1}},
            "importance": {"default": {"n_random": 2, "test_subsample": 100, "require_above_chance": False}},
            "coherence": {"default": {"n_random": 1, "steps": 2, "min_size": 1, "plot_k": []}}}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"profiles": {"tiny": tiny}}))
    common = ["--profile", "tiny", "--tag", "DIGITS", "--seed", "0", "--root", str(tmp_path / "root"), "--params",
              str(params), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for kind in ("train", "cluster", "importance", "coherence"):
        argv = [kind, *common] + ([] if kind == "train" else ["--state", "pruned", "--k", "4"])
        proc = subprocess.run([sys.executable, "-c", RECORD, *argv], cwd=REPO, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
        loaded = {Path(f).resolve() for f in json.loads(line.removeprefix("MODULES=")) if f}
        ours = {str(f.relative_to(REPO)) for f in loaded if f.is_relative_to(REPO) and f.parts[len(REPO.parts)] in
                ("modularity", "benchmark")}
        missing = ours - set(dvcgen.code_deps(kind))
        assert not missing, f"{kind} stage imports {sorted(missing)}, which are not among its DVC deps"


def test_report_writes_headline_metrics_for_dvc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.json (what `dvc metrics show` prints): row verdicts per table and the judged values at k = 12."""
    import json

    import pandas as pd
    from test_benchmark import fake_stage

    from benchmark import reproduce

    calls: list[str] = []
    monkeypatch.setattr(reproduce, "run_in_process", lambda s, p, r: fake_stage(s, p, r, calls))
    monkeypatch.setattr(reproduce, "stage_reason", lambda s, cache: None)
    assert reproduce.reproduce("smoke", root=tmp_path / "run", report_dir=tmp_path / "r", use_dvc=False,
                               check_expected=False, progress=False) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert set(metrics) == {"clusterability", "importance", "output_coherence", "input_coherence"}
    clus = metrics["clusterability"]
    table = pd.read_csv(tmp_path / "r" / "tables" / "clusterability.csv")
    assert clus["rows"]["skipped"] > 0 and sum(clus["rows"].values()) == len(table.drop_duplicates(["tag", "pruned", "k"]))
    assert clus["k12"]["MNIST.unpruned.ncut"] == pytest.approx(8.9 + 0.012)  # what the fake stage wrote
