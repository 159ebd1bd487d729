"""modularity: importance and coherence of spectral partitions of neural networks.

Data flows model -> graph -> partition -> sub-clusters -> importance / coherence -> statistics ->
tables. See README.md for the public API.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

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

# Functions that share their name with the module defining them (``modularity.partition`` is both a
# module and a function) are bound eagerly: otherwise the first ``import modularity.partition``
# anywhere would replace the function attribute with the module. ``from modularity.partition import
# ncut`` still reaches the module through ``sys.modules``.
from .importance import importance  # noqa: E402, F401
from .partition import partition  # noqa: E402, F401
from .subclusters import subclusters  # noqa: E402, F401
from .train import train  # noqa: E402, F401


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    if name == "stats":
        return import_module("modularity.stats")
    raise AttributeError(f"module 'modularity' has no attribute {name!r}")
