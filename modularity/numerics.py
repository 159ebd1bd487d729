"""Numerical code paths pinned so that the same seed gives the same bits on every x86-64 CPU.

Why: torch, MKL and oneDNN pick their kernels by the CPU they find (AVX-512 here, AVX2 on most
laptops and servers). Different kernels sum in different orders, a last-bit difference in one matrix
product grows through training into different networks, and the tables part (measured: 23 of the
smoke profile's stored values changed when this machine was made to use its AVX2 kernels).

``MODULARITY_NUMERICS`` chooses the mode; it is read once, when :mod:`modularity` is imported:

* ``reproducible`` (default): every CPU with AVX2 (x86-64 machines since about 2013) runs the same
  kernels, and every Intel one the same bits (MKL's AVX2 branch is reproducible "on every Intel CPU";
  on an AMD EPYC its matrix products gave other last bits, found by ``benchmark.numerics_trace``):

  - ``ATEN_CPU_CAPABILITY=avx2``: torch's own vectorised kernels (reductions, softmax, element-wise);
  - ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility for the matrix products
    (``Linear``, ``addmm``, the im2col convolution), bitwise whatever the alignment;
  - oneDNN (``mkldnn``) and NNPACK convolutions off: both choose blocking by the CPU's cache sizes and
    core count, which no variable pins, so convolutions run as im2col + the pinned MKL product;
  - the thread count stays the caller's choice: MKL's guarantee holds for a fixed number of threads,
    so the pipeline fixes it per profile (``threads`` in params.yaml).

* ``native``: whatever the CPU offers (faster; results then hold only on CPUs like this one).

What is *not* pinned: NumPy / SciPy / scikit-learn (OpenBLAS and NumPy's own SIMD dispatch: the
spectral embedding, k-means, statistics). These run in float64 on small problems; the regression
check is run under several OpenBLAS core types in the test suite to show the stored digits do not
depend on them (``tests/test_numerics.py``).

The environment variables must be set before torch runs its first operation, so :func:`pin` is
called at the top of ``modularity/__init__.py`` (which imports nothing heavy). If torch had already
chosen its kernels, :func:`state` reports it and :func:`check` raises.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Literal

Mode = Literal["reproducible", "native"]

MODE_VARIABLE = "MODULARITY_NUMERICS"
PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
}
_VALID = ("reproducible", "native")


def mode() -> Mode:
    """The mode named by ``MODULARITY_NUMERICS`` (default ``reproducible``)."""
    value = os.environ.get(MODE_VARIABLE, "reproducible").strip().lower() or "reproducible"
    if value not in _VALID:
        from .errors import ModularityError

        raise ModularityError(f"{MODE_VARIABLE}={value!r}: choose one of {', '.join(_VALID)}")
    return value  # type: ignore[return-value]


def pin() -> None:
    """Set the pinned variables in ``os.environ`` (reproducible mode); child processes inherit them.

    The pin overrides a value the caller exported (e.g. ``ATEN_CPU_CAPABILITY=avx512``): reproducible
    results are the point of the mode. Use ``MODULARITY_NUMERICS=native`` to keep the CPU's own kernels.
    """
    if mode() != "reproducible":
        return
    os.environ.update(PINNED_ENVIRONMENT)
    if "torch" in sys.modules:
        configure_torch()


def configure_torch() -> None:
    """Turn off the convolution back-ends that no variable pins (reproducible mode only)."""
    if mode() != "reproducible":
        return
    import torch

    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)


def state() -> dict[str, Any]:
    """What is in effect in this process: recorded with every result, and used by :func:`check`."""
    out: dict[str, Any] = {"mode": mode(), **{k: os.environ.get(k) for k in PINNED_ENVIRONMENT}}
    if "torch" in sys.modules:
        import torch

        out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        out["mkldnn"] = bool(torch.backends.mkldnn.enabled)
        out["nnpack"] = bool(torch._C._get_nnpack_enabled())
    return out


def check() -> None:
    """Raise if reproducible mode is asked for but torch runs other kernels (imported too early)."""
    if mode() != "reproducible":
        return
    import torch

    configure_torch()
    capability = torch.backends.cpu.get_cpu_capability()
    if capability.lower() != PINNED_ENVIRONMENT["ATEN_CPU_CAPABILITY"] and _has_avx2():
        from .errors import ModularityError

        raise ModularityError(
            f"torch runs {capability} kernels, not the pinned avx2: torch chose its kernels before modularity was imported; "
            f"import modularity first, export ATEN_CPU_CAPABILITY=avx2, or set {MODE_VARIABLE}=native")


def cpu_identity() -> dict[str, str]:
    """This CPU as kernels are chosen by it: vendor, model line, family / model numbers, SIMD flags.

    Two machines with the same identity run the same kernels; recorded beside results whose bits are
    compared across machines (the smoke regression's committed networks, ``benchmark.numerics_trace``).
    """
    import platform

    info: dict[str, str] = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "model name", "cpu family", "model") and key not in info:
            info[key] = value.strip()
        if key == "flags" and "flags" not in info:
            info["flags"] = " ".join(sorted(f for f in value.split() if f.startswith(("avx", "amx", "fma", "f16c"))))
    return info


def _has_avx2() -> bool:
    """Whether this CPU has AVX2 (on one without it, torch falls back and the pin cannot hold)."""
    try:
        with open("/proc/cpuinfo") as f:
            return " avx2" in f.read()
    except OSError:
        return True
