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
