"""Bad input never produces a number: a table of bad inputs through the CLI and the API.

CLI cases run in-process (``cli.main``): exit status 2, exactly one line on stderr, nothing new in
the output folder. API cases raise :class:`ModularityError`. Fixtures are a small DIGITS network
(trained for a few steps) and broken copies of it, and copies of the prepared digits dataset.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from modularity import cli, validate
from modularity.errors import ModularityError, OutputError, from_os_error
from modularity.models import MLP, build_model, load_checkpoint, save_checkpoint
from modularity.subclusters import SubCluster
from modularity.utils import atomic_path, clean_stale_staging, staged_outputs, write_text_atomic
from tests.helpers import digits_tensors, train_briefly

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------------
# Fixtures


class _Evil:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _copy_ckpt(good: Path, path: Path, state: Any = None, meta: Any = None, raw: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path.write_bytes(raw)
    elif state is not None:
        torch.save(state, path)
    else:
        shutil.copy(good, path)
    meta_text = good.with_suffix(".json").read_text() if meta is None else meta
    if meta_text is not False:
        path.with_suffix(".json").write_text(meta_text if isinstance(meta_text, str) else json.dumps(meta_text))
    return path


@pytest.fixture(scope="module")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The good checkpoint and its broken copies, by name."""
    root = tmp_path_factory.mktemp("fx")
    x, y = digits_tensors()
    torch.manual_seed(0)
    model = train_briefly(build_model("DIGITS"), x, y, steps=150, lr=1e-2)
    good = root / "good.pt"
    save_checkpoint(model, good, {"tag": "DIGITS", "seed": 0, "pruned": False})
    sd = torch.load(good, weights_only=True)
    out = {"good": good}

    def broken(name: str, **kw: Any) -> None:
        out[name] = _copy_ckpt(good, root / f"{name}.pt", **kw)

    def with_value(name: str, key: str, index: tuple[int, ...] | None, value: float) -> None:
        s = {k: v.clone() for k, v in sd.items()}
        if index is None:
            s[key][...] = value
        else:
            s[key][index] = value
        broken(name, state=s)

    with_value("nan1", "fc2.weight", (3, 5), float("nan"))
    with_value("nanall", "fc3.weight", None, float("nan"))
    with_value("inf1", "fc1.weight", (0, 0), float("inf"))
    with_value("neginf1", "fc4.bias", (1,), float("-inf"))
    with_value("nanbias", "fc5.bias", (0,), float("nan"))
    broken("empty", raw=b"")
    broken("trunc", raw=good.read_bytes()[: good.stat().st_size // 2])
    broken("random", raw=np.random.default_rng(0).bytes(4096))
    (root / "dir.pt").mkdir()
    (root / "dir.json").write_text(good.with_suffix(".json").read_text())
    out["dir"] = root / "dir.pt"
    broken("listjson", meta="[1, 2, 3]")
    broken("tagint", meta={"tag": 5})
    broken("notag", meta={"seed": 0})
    broken("badjson", meta="{not json")
    broken("unknowntag", meta={"tag": "NOPE"})
    broken("mnisttag", meta={"tag": "MNIST"})
    broken("nojson", meta=False)
    broken("listobj", state=[1, 2, 3])
    broken("missingkey", state={k: v for k, v in sd.items() if k != "fc5.weight"})
    broken("wrongshape", state={**sd, "fc2.weight": torch.zeros(256, 255)})
    marker = root / "PWNED"
    broken("evil", state={"fc1.weight": _Evil(marker)})
    out["marker"] = marker
    out["afile"] = root / "afile"
    out["afile"].write_text("x")
    return out


@pytest.fixture(scope="module")
def data_copies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Data roots holding broken copies of the prepared digits dataset."""
    from modularity.data import prepare

    base = tmp_path_factory.mktemp("data")
    src = prepare("digits", base / "good")  # scikit-learn's embedded digits: no network
    folder = src

    def copy(name: str) -> Path:
        dst = base / name / "datasets" / "digits"
        shutil.copytree(folder, dst)
        return dst

    roots: dict[str, Path] = {"good": base / "good"}
    d = copy("flip")
    raw = bytearray((d / "x_test.npy").read_bytes())
    raw[-10] ^= 0xFF
    (d / "x_test.npy").write_bytes(bytes(raw))
    d = copy("tampered")  # labels shifted, manifest rewritten to match: not the pinned digits
    y = np.load(d / "y_test.npy")
    np.save(d / "y_test.npy", (y + 1) % 10)
    manifest = json.loads((d / "manifest.json").read_text())
    from modularity.utils import sha256_file

    manifest["sha256"]["y_test"] = sha256_file(d / "y_test.npy")
    (d / "manifest.json").write_text(json.dumps(manifest))
    d = copy("badmanifest")
    (d / "manifest.json").write_text("}" + (d / "manifest.json").read_text()[1:])
    d = copy("nosha")
    m = json.loads((d / "manifest.json").read_text())
    del m["sha256"]
    (d / "manifest.json").write_text(json.dumps(m))
    d = copy("objarr")
    np.save(d / "y_test.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    for name in ("flip", "tampered", "badmanifest", "nosha", "objarr"):
        roots[name] = base / name
    return roots


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


# --------------------------------------------------------------------------------------------------
# The CLI table: (case id, argv with {fx:name} / {data:name} / {out} placeholders, message)

CLI_CASES = [
    # non-finite weights (probe C24-C28, N01-N03)
    ("C24 one NaN weight (cluster)", ["cluster", "{fx:nan1}", "--out", "{out}"], "fc2.weight has 1 NaN value(s)"),
    ("C25 NaN matrix (cluster)", ["cluster", "{fx:nanall}", "--out", "{out}"], "fc3.weight has 65536 NaN value(s)"),
    ("C26 one +inf weight", ["cluster", "{fx:inf1}", "--out", "{out}"], "fc1.weight has 1 +inf value(s)"),
    ("C28 one -inf bias", ["cluster", "{fx:neginf1}", "--out", "{out}"], "fc4.bias has 1 -inf value(s)"),
    ("N01 NaN weight (importance)", ["importance", "{fx:nan1}", "--n-random", "2", "--no-plots", "--out", "{out}"],
     "NaN value(s); the network cannot be analysed"),
    ("N02 NaN weight (coherence)", ["coherence", "{fx:nan1}", "--n-random", "1", "--steps", "2", "--out", "{out}"],
     "NaN value(s)"),
    ("N03 +inf weight (importance)", ["importance", "{fx:inf1}", "--n-random", "2", "--out", "{out}"], "+inf"),
    ("NaN output bias (cluster)", ["cluster", "{fx:nanbias}", "--out", "{out}"], "fc5.bias has 1 NaN"),
    # malformed checkpoints and metadata (C11-C39)
    ("C11 checkpoint is a folder", ["cluster", "{fx:dir}", "--out", "{out}"], "is a directory"),
    ("C12 truncated checkpoint", ["cluster", "{fx:trunc}", "--out", "{out}"], "corrupt checkpoint"),
    ("C14 random bytes", ["cluster", "{fx:random}", "--out", "{out}"], "not a torch checkpoint"),
    ("C15 0-byte checkpoint", ["cluster", "{fx:empty}", "--out", "{out}"], "the file is empty (0 bytes)"),
    ("C16 pickle with code", ["cluster", "{fx:evil}", "--out", "{out}"], "refused by torch.load(weights_only=True)"),
    ("C21 missing key", ["cluster", "{fx:missingkey}", "--out", "{out}"], "does not match tag 'DIGITS'"),
    ("C23 wrong shape", ["cluster", "{fx:wrongshape}", "--out", "{out}"], "size mismatch"),
    ("C31 list, not a state_dict", ["cluster", "{fx:listobj}", "--out", "{out}"], "expected a state_dict"),
    ("C33 metadata not JSON", ["cluster", "{fx:badjson}", "--out", "{out}"], "corrupt checkpoint metadata"),
    ("C34 metadata without tag", ["cluster", "{fx:notag}", "--out", "{out}"], "has no 'tag'"),
    ("C35 unknown tag", ["cluster", "{fx:unknowntag}", "--out", "{out}"], "unknown tag 'NOPE'"),
    ("C36 metadata is a JSON list", ["cluster", "{fx:listjson}", "--out", "{out}"], "expected a JSON object, got list"),
    ("C37 integer tag", ["cluster", "{fx:tagint}", "--out", "{out}"], "'tag' must be a string, got 5"),
    ("C38 other architecture's tag", ["cluster", "{fx:mnisttag}", "--out", "{out}"], "does not match tag 'MNIST'"),
    ("C39 no metadata", ["cluster", "{fx:nojson}", "--out", "{out}"], "metadata not found"),
    ("C10 checkpoint missing", ["cluster", "{fx:good}.missing.pt", "--out", "{out}"], "checkpoint not found"),
    # options, validated before the checkpoint is read
    ("C71 cluster --seed -1", ["cluster", "{fx:good}", "--seed", "-1", "--out", "{out}"], "seed must be an integer from 0"),
    ("C89 importance --seed -1", ["importance", "{fx:good}", "--seed", "-1", "--out", "{out}"], "seed must be"),
    ("C88 train --seed -1", ["train", "--tag", "DIGITS", "--seed", "-1", "--out", "{out}"], "seed must be"),
    ("coherence --seed -1", ["coherence", "{fx:good}", "--seed", "-1", "--out", "{out}"], "seed must be"),
    ("C85 cluster --jobs 0", ["cluster", "{fx:good}", "--shuffles", "2", "--jobs", "0", "--out", "{out}"],
     "--jobs must be a positive integer or -1"),
    ("C86 cluster --n-init -1", ["cluster", "{fx:good}", "--n-init", "-1", "--out", "{out}"], "--n-init must be"),
    ("C70 cluster --shuffles -1", ["cluster", "{fx:good}", "--shuffles", "-1", "--out", "{out}"], "--shuffles must be"),
    ("C50 cluster --k 0", ["cluster", "{fx:good}", "--k", "0", "--out", "{out}"], "k must be an integer >= 2"),
    ("C58 importance --k 1", ["importance", "{fx:good}", "--k", "1", "--out", "{out}"], "k must be"),
    ("C73 importance --correction bogus", ["importance", "{fx:good}", "--correction", "bogus", "--out", "{out}"],
     "invalid choice: 'bogus'"),
    ("C72 importance --ties bogus", ["importance", "{fx:good}", "--ties", "bogus", "--out", "{out}"],
     "invalid choice: 'bogus'"),
    ("coherence --correction bogus", ["coherence", "{fx:good}", "--correction", "bogus", "--out", "{out}"],
     "invalid choice"),
    ("C60 importance --n-random 0", ["importance", "{fx:good}", "--n-random", "0", "--out", "{out}"], "n_random must be"),
    ("C61 importance --n-random -5", ["importance", "{fx:good}", "--n-random", "-5", "--out", "{out}"], "n_random"),
    ("C62 coherence --n-random 0", ["coherence", "{fx:good}", "--n-random", "0", "--out", "{out}"], "n_random must be"),
    ("C87 coherence --max-prop 5", ["coherence", "{fx:good}", "--max-prop", "5", "--out", "{out}"],
     "max_prop must be a number in (0, 1]"),
    ("C77 coherence --max-prop 0", ["coherence", "{fx:good}", "--max-prop", "0", "--out", "{out}"], "max_prop must be"),
    ("coherence --max-prop nan", ["coherence", "{fx:good}", "--max-prop", "nan", "--out", "{out}"], "max_prop must be"),
    ("C78 coherence --min-size 0", ["coherence", "{fx:good}", "--min-size", "0", "--out", "{out}"], "min_size must be"),
    ("C74 coherence --steps -1", ["coherence", "{fx:good}", "--steps", "-1", "--out", "{out}"], "steps must be"),
    ("C75 coherence --lr 0", ["coherence", "{fx:good}", "--lr", "0", "--out", "{out}"], "lr must be a finite number > 0"),
    ("C76 coherence --lr nan", ["coherence", "{fx:good}", "--lr", "nan", "--out", "{out}"], "lr must be"),
    ("coherence --lr inf", ["coherence", "{fx:good}", "--lr", "inf", "--out", "{out}"], "lr must be"),
    ("C79 coherence --batch-size 0", ["coherence", "{fx:good}", "--batch-size", "0", "--out", "{out}"],
     "batch_size must be"),
    ("C55 --k abc", ["cluster", "{fx:good}", "--k", "abc"], "invalid int value: 'abc'"),
    ("C84 --threads 0", ["--threads", "0", "cluster", "{fx:good}"], "must be at least 1"),
    ("--threads x", ["--threads", "x", "cluster", "{fx:good}"], "must be an integer"),
    ("C01 unknown tag (train)", ["train", "--tag", "NOPE", "--out", "{out}"], "unknown tag 'NOPE'"),
    # outputs
    ("O07 --out is a file", ["cluster", "{fx:good}", "--out", "{fx:afile}"], "exists and is not a folder"),
    ("--out under a file", ["cluster", "{fx:good}", "--out", "{fx:afile}/sub"], "exists and is not a folder"),
    # data (D-cases)
    ("C04 data status unknown", ["data", "status", "nope", "--root", "{out}"], "unknown dataset 'nope'"),
    ("D02 flipped byte (status)", ["data", "status", "digits", "--root", "{data:flip}"], "failed verification: digits"),
    ("D13 tampered, manifest rewritten (status)", ["data", "status", "digits", "--root", "{data:tampered}"],
     "failed verification: digits"),
    ("D05 corrupt manifest (status)", ["data", "status", "digits", "--root", "{data:badmanifest}"], "failed verification"),
    ("D07 tampered data (importance)", ["importance", "{fx:good}", "--n-random", "2", "--no-plots",
                                        "--data-root", "{data:tampered}", "--out", "{out}"],
     "not the pinned digits data (the manifest was rewritten to match: the folder was tampered with"),
    ("D01 flipped byte (importance)", ["importance", "{fx:good}", "--n-random", "2", "--no-plots",
                                       "--data-root", "{data:flip}", "--out", "{out}"], "checksum mismatch"),
    ("D04 corrupt manifest (importance)", ["importance", "{fx:good}", "--n-random", "2", "--no-plots",
                                           "--data-root", "{data:badmanifest}", "--out", "{out}"], "corrupt manifest"),
    ("D11 manifest without sha256", ["importance", "{fx:good}", "--n-random", "2", "--no-plots",
                                     "--data-root", "{data:nosha}", "--out", "{out}"], "incomplete manifest"),
    ("D12 object array labels", ["importance", "{fx:good}", "--n-random", "2", "--no-plots",
                                 "--data-root", "{data:objarr}", "--out", "{out}"], "checksum mismatch"),
]


def _fill(arg: str, fx: dict[str, Path], data: dict[str, Path], out: Path) -> str:
    for name, path in fx.items():
        arg = arg.replace(f"{{fx:{name}}}", str(path))
    for name, path in data.items():
        arg = arg.replace(f"{{data:{name}}}", str(path))
    return arg.replace("{out}", str(out))


@pytest.mark.parametrize("case,argv,message", CLI_CASES, ids=[c[0].split(" ")[0] + "-" + str(i)
                                                            for i, c in enumerate(CLI_CASES)])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, argv: list[str], message: str,
                                                             fx: dict[str, Path], data_copies: dict[str, Path],
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    before = {k: tree(p.parent) for k, p in (("fx", fx["good"]),)}
    t0 = time.perf_counter()
    code, stdout, stderr = run_cli([_fill(a, fx, data_copies, out) for a in argv], capsys)
    elapsed = time.perf_counter() - t0
    assert code == 2, (case, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, (case, stderr)
    assert "error: " in lines[0] and message in lines[0], (case, lines[0])
    assert "Traceback" not in stderr
    assert not out.exists() or tree(out) == set(), (case, tree(out))  # no partial output, no staging folder
    assert tree(fx["good"].parent) == before["fx"]  # nothing written next to the checkpoints
    assert not fx["marker"].exists()  # no pickle payload ever ran
    assert elapsed < 20, (case, elapsed)


def test_closed_choices_fail_within_a_second(fx: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["importance", str(fx["good"]), "--correction", "bogus"], ["importance", str(fx["good"]), "--ties", "x"]):
        t0 = time.perf_counter()
        code, _, err = run_cli(argv + ["--out", str(tmp_path)], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and time.perf_counter() - t0 < 1.0


@pytest.mark.slow
def test_a_real_process_prints_exactly_one_line(fx: dict[str, Path], tmp_path: Path) -> None:
    """Through ``python -m modularity`` (warnings included): the NaN checkpoint and the code-carrying pickle."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("nan1", "evil"):
        proc = subprocess.run([sys.executable, "-m", "modularity", "--threads", "1", "cluster", str(fx[name]),
                               "--out", str(tmp_path / name)], capture_output=True, text=True, env=env, cwd=REPO)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
        assert not (tmp_path / name).exists()
    assert not fx["marker"].exists()


# --------------------------------------------------------------------------------------------------
# I/O failures: simulated full disk, tmpfs where it can be mounted


def test_disk_full_half_way_leaves_the_previous_outputs(fx: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(["--threads", "1", "cluster", str(fx["good"]), "--k", "4", "--out", str(out)], capsys)
    assert code == 0, err
    good = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(good) == 2

    import modularity.utils as U

    real = U.write_text_atomic

    def full(path: Any, text: str) -> None:  # the JSON summary, written after the labels CSV
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(U, "write_text_atomic", full)
    code, _, err = run_cli(["--threads", "1", "cluster", str(fx["good"]), "--k", "4", "--seed", "0",
                            "--out", str(out)], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err and "disk is full" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == good  # old outputs intact, no staging left

    fresh = tmp_path / "fresh" / "deeper"
    code, _, err = run_cli(["--threads", "1", "cluster", str(fx["good"]), "--k", "4", "--out", str(fresh)], capsys)
    assert code == 2 and not fresh.exists() and not fresh.parent.exists()  # created folders removed again
    monkeypatch.setattr(U, "write_text_atomic", real)


def test_os_errors_become_one_line_output_errors() -> None:
    for err, text in ((OSError(errno.ENOSPC, "No space left on device", "/x/a.csv"), "disk is full"),
                      (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "read-only file system"),
                      (PermissionError(errno.EPERM, "Operation not permitted", "/imm"), "immutable"),
                      (FileExistsError(errno.EEXIST, "File exists", "/afile"), "in the way"),
                      (OSError("92032 requested and 65408 written"), "short write")):
        e = from_os_error(err)
        assert isinstance(e, OutputError) and text in str(e) and "\n" not in str(e)


def test_tmpfs_full_disk_if_mountable(fx: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs privileges)")
    try:
        code, _, err = run_cli(["--threads", "1", "cluster", str(fx["good"]), "--k", "4", "--out", str(mnt / "x")],
                               capsys)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert list(mnt.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def _mount_tmpfs(mnt: Path, options: str) -> None:
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs privileges)")


def test_read_only_output_folder_is_refused_before_work(fx: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    mnt = tmp_path / "ro"
    _mount_tmpfs(mnt, "size=64k,ro")
    try:
        for argv in (["cluster", str(fx["good"]), "--out", str(mnt / "x")],
                     ["importance", str(fx["good"]), "--out", str(mnt / "y")],
                     ["data", "prepare", "digits", "--root", str(mnt)]):
            code, _, err = run_cli(argv, capsys)
            assert code == 2 and len(err.splitlines()) == 1 and "read-only" in err.lower(), err
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_immutable_output_folder_is_refused(fx: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    imm = tmp_path / "imm"
    imm.mkdir()
    if subprocess.run(["chattr", "+i", str(imm)], capture_output=True).returncode:
        pytest.skip("chattr +i is not available here")
    try:
        code, _, err = run_cli(["cluster", str(fx["good"]), "--out", str(imm)], capsys)
        assert code == 2 and len(err.splitlines()) == 1 and "not writable" in err, err
    finally:
        subprocess.run(["chattr", "-i", str(imm)], capture_output=True)


def test_chance_level_checkpoint_is_refused_before_the_partition(fx: dict[str, Path], tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import modularity.graph

    path = tmp_path / "constant.pt"
    model = build_model("DIGITS")
    with torch.no_grad():  # always predicts class 0: balanced accuracy exactly 1/10
        model.fc5.weight.zero_()
        model.fc5.bias.copy_(torch.arange(10, 0, -1, dtype=torch.float32))
    save_checkpoint(model, path, {"tag": "DIGITS", "seed": 0, "pruned": False})

    def no_graph(*a: Any, **k: Any) -> None:
        raise AssertionError("the partition must not start")

    monkeypatch.setattr(modularity.graph, "graph_of", no_graph)
    code, _, err = run_cli(["importance", str(path), "--n-random", "2", "--no-plots", "--out", str(tmp_path / "o")],
                           capsys)
    assert code == 2 and "no better than chance" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_all_zero_weights_say_so(fx: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sd = {k: torch.zeros_like(v) for k, v in torch.load(fx["good"], weights_only=True).items()}
    path = _copy_ckpt(fx["good"], tmp_path / "zero.pt", state=sd)
    code, _, err = run_cli(["cluster", str(path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "are all its weights zero?" in err


# --------------------------------------------------------------------------------------------------
# Staged outputs


def test_staged_outputs_all_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a")
    with pytest.raises(RuntimeError), staged_outputs():
        write_text_atomic(tmp_path / "a.txt", "new a")
        write_text_atomic(tmp_path / "b.txt", "new b")
        assert (tmp_path / "a.txt").read_text() == "old a"  # nothing in place before the end
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"] and (tmp_path / "a.txt").read_text() == "old a"
    with staged_outputs():
        write_text_atomic(tmp_path / "a.txt", "new a")
        with atomic_path(tmp_path / "sub" / "c.bin") as tmp, open(tmp, "wb") as f:
            f.write(b"c")
    assert (tmp_path / "a.txt").read_text() == "new a" and (tmp_path / "sub" / "c.bin").read_bytes() == b"c"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "sub"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_staging_of_dead_processes_is_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    (tmp_path / f".staging-{dead}").mkdir()
    (tmp_path / f".k12.staging-{dead}").mkdir()
    (tmp_path / f".staging-{os.getppid()}").mkdir()  # a live process: kept
    (tmp_path / "staging-1").mkdir()  # not a staging folder: kept
    removed = clean_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted([f".staging-{dead}", f".k12.staging-{dead}"])
    write_text_atomic(tmp_path / "x.txt", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".staging-{os.getppid()}", "staging-1", "x.txt"])


# --------------------------------------------------------------------------------------------------
# API cases


@pytest.fixture(scope="module")
def small() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    x, y = digits_tensors()
    torch.manual_seed(0)
    return train_briefly(MLP(64, (16, 16), 10), x, y, steps=150, lr=1e-2), x[:300], y[:300]


def _with(model: torch.nn.Module, key: str, value: float) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        m.get_parameter(key).view(-1)[0] = value
    return m


SUBS = [SubCluster("hidden1", 0, np.arange(4), 16), SubCluster("hidden1", 1, np.arange(4, 9), 16),
        SubCluster("hidden2", 0, np.arange(6), 16)]


def api_cases() -> list[tuple[str, Any, str]]:
    import modularity as m
    from modularity.lesion import lesion_counts, unlesioned_counts

    def imp(model: Any, x: Any = None, y: Any = None, **kw: Any) -> Any:
        return lambda s: m.importance(model(s) if callable(model) else model, SUBS,
                                      (s[1] if x is None else x(s), s[2] if y is None else y), **{"n_random": 3, **kw})

    def coh(**kw: Any) -> Any:
        return lambda s: m.input_coherence(s[0], SUBS, **{"n_random": 1, "steps": 1, "device": "cpu", **kw})

    nan_model = lambda s: _with(s[0], "fc2.weight", float("nan"))  # noqa: E731
    return [
        ("A27 graph_of NaN", lambda s: m.graph_of(nan_model(s)), "fc2.weight has 1 NaN"),
        ("graph_of +inf", lambda s: m.graph_of(_with(s[0], "fc1.weight", float("inf"))), "+inf"),
        ("clusterability NaN", lambda s: m.clusterability(nan_model(s), k=2, n_shuffles=1), "NaN"),
        ("A07c clusterability n_shuffles=0", lambda s: m.clusterability(s[0], k=2, n_shuffles=0), "n_shuffles"),
        ("clusterability n_jobs=0", lambda s: m.clusterability(s[0], k=2, n_shuffles=1, n_jobs=0), "n_jobs"),
        ("clusterability seed=-1", lambda s: m.clusterability(s[0], k=2, n_shuffles=1, seed=-1), "seed"),
        ("A06j partition seed=-1", lambda s: m.partition(m.graph_of(s[0]), k=2, seed=-1), "seed"),
        ("partition n_init=0", lambda s: m.partition(m.graph_of(s[0]), k=2, n_init=-3), "n_init"),
        ("A19h importance NaN weight", imp(nan_model), "NaN value(s)"),
        ("A19c importance NaN images", imp(lambda s: s[0], x=lambda s: torch.full_like(s[1], float("nan"))),
         "images have"),
        ("importance one inf pixel", imp(lambda s: s[0], x=lambda s: s[1].clone().index_fill_(0, torch.tensor([3]),
                                                                                              float("inf"))),
         "in 1 of 300 images"),
        ("A19e importance seed=-1", imp(lambda s: s[0], seed=-1), "seed"),
        ("A19f importance correction", imp(lambda s: s[0], correction="bogus"), "correction method must be one of"),
        ("importance ties", imp(lambda s: s[0], ties="bogus"), "ties must be one of"),
        ("importance alpha", imp(lambda s: s[0], alpha=1.5), "alpha"),
        ("A08d importance n_random=True", imp(lambda s: s[0], n_random=True), "n_random"),
        ("A19g importance n_random=10**12", imp(lambda s: s[0], n_random=10**12), "memory"),
        ("chance-level network", imp(lambda s: MLP(64, (16, 16), 10).eval()), "no better than chance"),
        ("lesion_counts NaN weight", lambda s: lesion_counts(nan_model(s), "hidden1", [[0]], s[1], s[2]), "NaN"),
        ("unlesioned_counts NaN images",
         lambda s: unlesioned_counts(s[0], torch.full_like(s[1], float("nan")), s[2]), "NaN"),
        ("input_coherence NaN", lambda s: m.input_coherence(nan_model(s), SUBS, n_random=1, steps=1), "NaN"),
        ("A20f input_coherence max_prop=1.5", coh(max_prop=1.5), "max_prop"),
        ("input_coherence min_size=0", coh(min_size=0), "min_size"),
        ("input_coherence lr=inf", coh(lr=float("inf")), "lr"),
        ("input_coherence seed=-1", coh(seed=-1), "seed"),
        ("input_coherence correction", coh(correction="nope"), "correction method"),
        ("A12 fractional unit indices", lambda s: SubCluster("hidden1", 0, np.array([0.5, 1.7, 2.9]), 16),
         "whole numbers"),
        ("boolean unit mask", lambda s: SubCluster("hidden1", 0, np.array([True, False]), 16), "boolean"),
    ]


API_CASES = api_cases()


@pytest.mark.parametrize("case,call,message", API_CASES, ids=[c[0].split(" ")[0] + "-" + str(i)
                                                            for i, c in enumerate(API_CASES)])
def test_api_bad_input_raises_modularity_error(case: str, call: Any, message: str,
                                               small: tuple[torch.nn.Module, torch.Tensor, torch.Tensor]) -> None:
    t0 = time.perf_counter()
    with pytest.raises(ModularityError, match=None) as info:
        call(small)
    assert message in str(info.value), (case, str(info.value))
    assert "\n" not in str(info.value)
    assert time.perf_counter() - t0 < 10


def test_integral_float_unit_indices_are_accepted() -> None:
    assert SubCluster("hidden1", 0, np.array([2.0, 1.0]), 16).units.tolist() == [1, 2]


@pytest.mark.parametrize("name,message", [("empty", "0 bytes"), ("listjson", "JSON object"), ("tagint", "string"),
                                          ("nan1", "NaN"), ("inf1", "+inf"), ("random", "weights_only")])
def test_load_checkpoint_refuses(name: str, message: str, fx: dict[str, Path]) -> None:
    with pytest.raises(ModularityError, match=None) as info:
        load_checkpoint(fx[name])
    assert message in str(info.value)


def test_float16_checkpoint_is_accepted(fx: dict[str, Path], tmp_path: Path) -> None:
    """Accepted by design (probe C40): finite fp16 weights are cast on load."""
    sd = {k: v.half() for k, v in torch.load(fx["good"], weights_only=True).items()}
    path = _copy_ckpt(fx["good"], tmp_path / "fp16.pt", state=sd)
    model, _ = load_checkpoint(path)
    assert next(model.parameters()).dtype == torch.float32


def test_correction_methods_are_statsmodels_names() -> None:
    from statsmodels.stats.multitest import multipletests

    for method in validate.CORRECTION_METHODS:
        multipletests([0.01, 0.2], method=method)


def test_loader_refuses_flipped_and_tampered_data(data_copies: dict[str, Path]) -> None:
    from modularity.data import load_dataset

    assert load_dataset("digits", data_copies["good"]).x_test.shape[1:] == (1, 8, 8)
    with pytest.raises(ModularityError, match="x_test.npy"):
        load_dataset("digits", data_copies["flip"])
    with pytest.raises(ModularityError, match="tampered"):
        load_dataset("digits", data_copies["tampered"])


# --------------------------------------------------------------------------------------------------
# Pipeline guards


def test_pipeline_stops_on_a_flipped_byte_before_any_stage(data_copies: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmark import guard

    guard.check_datasets(["digits"], data_copies["good"])
    with pytest.raises(ModularityError) as info:
        guard.check_datasets(["digits", "mnist"], data_copies["flip"])
    assert "x_test.npy" in str(info.value) and "before any stage ran" in str(info.value)


@pytest.mark.parametrize("use_dvc", [False, True])
def test_flipped_byte_stops_reproduce_before_dvc(use_dvc: bool, tmp_path: Path, data_copies: dict[str, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``reproduce`` verifies the data before running (or letting DVC remove) anything."""
    from benchmark import guard, reproduce

    ran: list[str] = []
    monkeypatch.setattr(reproduce, "run_in_process", lambda s, p, r: ran.append(s.name))
    monkeypatch.setattr(reproduce, "dvc", lambda *args, **kw: ran.append("dvc " + " ".join(args)))
    monkeypatch.setattr(reproduce, "make_executor", lambda *args, **kw: ran.append("executor"))
    import benchmark.dvcgen

    monkeypatch.setattr(benchmark.dvcgen, "write_dvc_yaml", lambda *a, **k: ran.append("dvc.yaml"))
    monkeypatch.setattr(guard, "datasets_of", lambda stages: ["digits"])
    monkeypatch.setenv("MODULARITY_DATA", str(data_copies["flip"]))
    with pytest.raises(ModularityError, match="x_test.npy"):
        reproduce.reproduce("smoke", root=tmp_path / "run", report_dir=tmp_path / "r", use_dvc=use_dvc,
                            check_expected=False, progress=False)
    assert ran == [] and not (tmp_path / "r").exists()


def test_second_run_in_the_same_clone_is_refused_with_the_pid(tmp_path: Path) -> None:
    from benchmark import guard

    lock = tmp_path / "reproduce.lock"
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from benchmark import guard\n"
            f"with guard.run_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ModularityError, match=f"PID {holder.pid}"):
            with guard.run_lock(lock):
                pass
    finally:
        holder.kill()
        holder.wait()
    with guard.run_lock(lock):  # a killed holder never leaves the lock taken
        pass


def test_incomplete_counts_failed_stages_not_unavailable_ones() -> None:
    from benchmark import guard

    failed = {"a": "stage a failed: boom", "b": "stage a failed: boom", "c": "dataset cifar10 unavailable: offline"}
    assert guard.incomplete(failed) == {"a": "stage a failed: boom", "b": "stage a failed: boom"}


@pytest.mark.slow
def test_a_failed_stage_makes_not_run_rows_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale results of a stage that failed in this run are not reported; the run says it is incomplete."""
    import pandas as pd

    from benchmark import reproduce
    from tests.test_benchmark import fake_stage

    calls: list[str] = []
    monkeypatch.setattr(reproduce, "stage_reason", lambda s, cache: None)
    monkeypatch.setattr(reproduce, "run_in_process", lambda s, p, r: fake_stage(s, p, r, calls))
    kw = dict(root=tmp_path / "run", report_dir=tmp_path / "r", use_dvc=False, check_expected=False, progress=False)
    assert reproduce.reproduce("smoke", **kw) == 0

    def failing(stage: Any, profile: Any, root: Path) -> None:
        if stage.kind == "cluster" and stage.tag == "MNIST":
            raise ModularityError("checksum mismatch for data/datasets/mnist/x_test.npy")
        fake_stage(stage, profile, root, calls)

    monkeypatch.setattr(reproduce, "run_in_process", failing)
    monkeypatch.setattr(reproduce, "is_done", lambda *a: False)
    assert reproduce.reproduce("smoke", **kw) == 2
    rows = pd.read_csv(tmp_path / "r" / "tables" / "clusterability.csv")
    mnist = rows[(rows.tag == "MNIST") & (rows.row_verdict != "skipped")]  # "skipped": not in the smoke profile
    assert len(mnist) and set(mnist.row_verdict) == {"not run"}
    assert all("checksum mismatch" in r for r in mnist.reason)  # not the stale numbers of the first run


@pytest.mark.slow
def test_sigterm_removes_the_staging_folders(fx: dict[str, Path], tmp_path: Path) -> None:
    """A command stopped with SIGTERM while writing leaves neither outputs nor a staging folder."""
    import signal

    out = tmp_path / "out"
    code = ("import os, signal, sys; sys.path.insert(0, {repo!r})\n"
            "import importlib, modularity\n"
            "importlib.import_module('modularity.partition')\n"
            "def slow(path, obj):\n"
            "    print('writing', flush=True); signal.pause()\n"
            "sys.modules['modularity.partition'].write_json_atomic = slow\n"
            "from modularity import cli\n"
            "sys.exit(cli.main(['--threads', '1', 'cluster', {ck!r}, '--k', '4', '--out', {out!r}]))\n"
            ).format(repo=str(REPO), ck=str(fx["good"]), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    assert any(p.name.startswith(".staging-") for p in out.iterdir())  # the labels CSV is staged
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert not out.exists()
