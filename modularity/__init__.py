"""modularity: importance and coherence of spectral partitions of neural networks.

Data flows model -> graph -> partition -> sub-clusters -> importance / coherence -> statistics ->
tables. See README.md for the public API.

Importing the package is cheap: every public name is resolved on first use (PEP 562), so
``import modularity`` and ``python -m modularity --help`` do not load torch, pandas or scipy.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

from . import numerics as _numerics

_numerics.pin()  # before torch runs anything: the same kernels on every x86-64 CPU (modularity/numerics.py)

__version__ = "0.1.0"

# Public names, resolved lazily on first use.
_EXPORTS = {
    "ModularityError": "modularity.errors",
    "build_model": "modularity.models",
    "load_checkpoint": "modularity.models",
    "save_checkpoint": "modularity.models",
    "tag_spec": "modularity.models",
    "TAGS": "modularity.models",
    "layer_specs": "modularity.layers",
    "LayerSpec": "modularity.layers",
    "load_dataset": "modularity.data",
    "train": "modularity.train",
    "graph_of": "modularity.graph",
    "WeightGraph": "modularity.graph",
    "partition": "modularity.partition",
    "Partition": "modularity.partition",
    "ncut": "modularity.partition",
    "clusterability": "modularity.partition",
    "Clusterability": "modularity.partition",
    "subclusters": "modularity.subclusters",
    "SubCluster": "modularity.subclusters",
    "random_sets": "modularity.subclusters",
    "lesion_counts": "modularity.lesion",
    "unlesioned_counts": "modularity.lesion",
    "importance": "modularity.importance",
    "input_coherence": "modularity.visualize",
    "declare_layout": "modularity.arch",
    "ImportanceResult": "modularity.results",
    "InputCoherenceResult": "modularity.results",
    "from_labels": "modularity.partitions",
    "random_like": "modularity.partitions",
    "activation_partition": "modularity.partitions",
    "compare_partitions": "modularity.partitions",
    "double_lesion": "modularity.double_lesion",
}

__all__ = sorted(_EXPORTS)

#: Public functions that share their name with the module defining them (``modularity.partition`` is
#: both a module and a function). The package attribute is always the function.
_SHADOWED = frozenset(name for name, module in _EXPORTS.items() if module == f"{__name__}.{name}")


class _Package(types.ModuleType):
    """The package's module type: keeps ``modularity.<name>`` the function for :data:`_SHADOWED` names.

    When ``modularity.partition`` (the module) is first imported, the import system binds it as an
    attribute of the package, which would hide the function ``partition``. This ``__setattr__`` binds
    the module's function instead; ``from modularity.partition import ncut`` and
    ``importlib.import_module("modularity.partition")`` still reach the module through ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType) and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "stats":
        return import_module("modularity.stats")
    raise AttributeError(f"module 'modularity' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, "stats"})
