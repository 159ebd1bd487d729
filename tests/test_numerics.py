"""Pinned numerics (modularity/numerics.py): the same bits whatever kernels the CPU would pick.

Another CPU is emulated on this one by the variables that make torch, MKL, oneDNN and OpenBLAS use
the kernels they would pick there (``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``, ``OPENBLAS_CORETYPE``). A fingerprint run (a few training steps of a small MLP
and a small CNN, then the spectral partition of the MLP) must give identical bits under each; without
the pin (``MODULARITY_NUMERICS=native``) the fingerprint must change between AVX-512 and AVX2 kernels,
which shows it is sensitive enough to catch what the pin prevents.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modularity import numerics
from modularity.errors import ModularityError

REPO = Path(__file__).resolve().parents[1]

FINGERPRINT = r"""
import hashlib, modularity, torch, numpy as np
from torch import nn
from modularity.graph import graph_of
from modularity.models import MLP
from modularity.partition import partition
torch.set_num_threads(1)
torch.manual_seed(0)
x = torch.randn(256, 1, 28, 28); y = torch.randint(0, 10, (256,))
h = hashlib.sha256()
mlp = MLP()
cnn = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3), nn.ReLU(),
                    nn.Flatten(), nn.Linear(8 * 11 * 11, 10))
for net in (mlp, cnn):
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for step in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    for p in net.parameters():
        h.update(p.detach().numpy().tobytes())
part = partition(graph_of(mlp), k=12, seed=0)
h.update(np.asarray(part.labels).tobytes())
h.update(np.float64(part.ncut).tobytes())
print(h.hexdigest())
"""

EMULATED = {
    "this CPU": {},
    "AVX-512 asked for": {"ATEN_CPU_CAPABILITY": "avx512"},
    "AVX2 CPU": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                 "OPENBLAS_CORETYPE": "Haswell"},
    "pre-AVX2 kernels asked for": {"ATEN_CPU_CAPABILITY": "default", "OPENBLAS_CORETYPE": "Sandybridge",
                                   "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


def _has_avx512() -> bool:
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def _fingerprint(extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINNED_ENVIRONMENT}
    env.update(extra)
    proc = subprocess.run([sys.executable, "-c", FINGERPRINT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.slow
def test_pinned_fingerprint_is_the_same_under_every_emulated_cpu() -> None:
    prints = {name: _fingerprint(extra) for name, extra in EMULATED.items()}
    assert len(set(prints.values())) == 1, prints


@pytest.mark.slow
@pytest.mark.skipif(not _has_avx512(), reason="needs a CPU with AVX-512 to show the unpinned kernels differ")
def test_unpinned_fingerprint_changes_with_the_kernels() -> None:
    """Without the pin, AVX-512 and AVX2 kernels give other bits: the fingerprint can fail."""
    native = {"MODULARITY_NUMERICS": "native"}
    a = _fingerprint({**native, "ATEN_CPU_CAPABILITY": "avx512"})
    b = _fingerprint({**native, "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert a != b


def test_pin_sets_the_variables_and_native_leaves_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    monkeypatch.delenv("MODULARITY_NUMERICS", raising=False)
    numerics.pin()
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and os.environ["MKL_CBWR"] == "AVX2,STRICT"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")
    monkeypatch.setenv("MODULARITY_NUMERICS", "native")
    numerics.pin()
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx512"


def test_this_process_runs_the_pinned_kernels() -> None:
    import torch

    numerics.check()
    s = numerics.state()
    assert s["mode"] == "reproducible" and s["mkldnn"] is False and s["nnpack"] is False
    assert s["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def test_a_misspelt_mode_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODULARITY_NUMERICS", "reproducable")
    with pytest.raises(ModularityError, match="choose one of reproducible, native"):
        numerics.mode()
