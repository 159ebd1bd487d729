"""From declarative table specs and a profile to the rows of every table and the stages that fill them.

* A **table spec** (``benchmark/specs/<table>.yaml``) says which networks (tag, pruned, k) make up its
  rows, which statistic of which analysis fills each column, and how each column is compared with the
  paper (:mod:`benchmark.compare`).
* A **profile** (``params.yaml``, ``profiles.<name>``) says which families, tags, seeds and k run here,
  and with what parameters (training recipe, number of shuffles, random draws, visualisation steps).
* :func:`plan` expands both into :class:`Row` objects (each either planned or skipped with a reason)
  and the :class:`Stage` list: one ``train`` stage per (tag, seed) and one ``cluster`` / ``importance``
  / ``coherence`` stage per (tag, seed, pruned) covering every k the tables need. The stages are the
  nodes of the DVC pipeline (:mod:`benchmark.dvcgen`) and of the in-process runner alike.

Output layout under ``data/benchmark/<profile>/`` (the profile's root):

* ``checkpoints/<TAG>/seed<S>/{unpruned,pruned}.{pt,json}`` (the train stage);
* ``results/<TAG>/seed<S>/<pruned|unpruned>/<analysis>/k<K>.json`` (+ ``.csv`` per-sub-cluster tables);
* ``results.csv`` (every network-level result, tidy) and the report under the profile's ``report_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modularity.errors import ModularityError

REPO = Path(__file__).resolve().parents[1]
SPEC_DIR = Path(__file__).parent / "specs"
PARAMS = REPO / "params.yaml"
BENCHMARK_ROOT = Path("data/benchmark")
TABLE_ORDER = ("clusterability", "importance", "output_coherence", "input_coherence")
ANALYSES = ("cluster", "importance", "coherence")
FAMILIES = ("mlp", "cnn", "vgg", "imagenet")
CRITERIA = ("tolerance", "sign", "band", "replicates", "report")

# A stage's code dependencies are computed from the import graph (benchmark.dvcgen.code_deps), not listed here.


# --------------------------------------------------------------------------------------------------
# Table specs


@dataclass(frozen=True)
class Column:
    """One column of a table: statistic ``key`` aggregated over replicates by ``stat``.

    ``stat`` is ``median`` (default) or ``n_significant`` (number of replicates with ``key < alpha``).
    ``criterion`` is a dict with ``kind`` in :data:`CRITERIA` and its parameters.
    """

    key: str
    label: str
    criterion: dict[str, Any]
    stat: str = "median"
    alpha: float = 0.05

    @property
    def name(self) -> str:
        """Unique column name in result frames: ``ncut`` or ``n_sig_percentile``."""
        return self.key if self.stat == "median" else f"n_sig_{self.key}"


@dataclass(frozen=True)
class RowGroup:
    family: str
    tags: tuple[str, ...]
    pruned: tuple[bool, ...]
    k: tuple[int, ...]
    explain: str = ""  # what the evidence says about a disagreement of these rows (shown with "differ")


#: The keys a row group of a table spec may have.
ROW_GROUP_KEYS = ("family", "tags", "pruned", "k", "explain")


@dataclass(frozen=True)
class TableSpec:
    name: str
    title: str
    analysis: str
    paper: str
    note: str
    columns: tuple[Column, ...]
    rows: tuple[RowGroup, ...]


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ModularityError(f"{where}: missing key {key!r}")
    return d[key]


def parse_table_spec(data: dict[str, Any], where: str = "table spec") -> TableSpec:
    """Validate and parse one table spec (a dict read from YAML)."""
    if not isinstance(data, dict):
        raise ModularityError(f"{where}: expected a mapping")
    analysis = _require(data, "analysis", where)
    if analysis not in ANALYSES:
        raise ModularityError(f"{where}: analysis {analysis!r} is not one of {', '.join(ANALYSES)}")
    columns = []
    for c in _require(data, "columns", where):
        crit = dict(_require(c, "criterion", f"{where} column {c.get('key')!r}"))
        if crit.get("kind") not in CRITERIA:
            raise ModularityError(f"{where}: column {c.get('key')!r} has criterion {crit.get('kind')!r}, "
                                  f"not one of {', '.join(CRITERIA)}")
        stat = c.get("stat", "median")
        if stat not in ("median", "n_significant"):
            raise ModularityError(f"{where}: column {c.get('key')!r} has stat {stat!r} (median | n_significant)")
        from .analyses import validate_column  # the analysis registry checks every column (h11)

        validate_column(analysis, _require(c, "key", where), stat, crit, where)
        columns.append(Column(key=_require(c, "key", where), label=c.get("label", c["key"]), criterion=crit,
                              stat=stat, alpha=float(c.get("alpha", 0.05))))
    names = [c.name for c in columns]
    if len(set(names)) != len(names):
        raise ModularityError(f"{where}: duplicate columns {sorted({n for n in names if names.count(n) > 1})}")
    groups = []
    for g in _require(data, "rows", where):
        unknown = sorted(set(g) - set(ROW_GROUP_KEYS))
        if unknown:
            raise ModularityError(f"{where}: row group with unknown keys {unknown} (allowed: {', '.join(ROW_GROUP_KEYS)})")
        fam = _require(g, "family", where)
        if fam not in FAMILIES:
            raise ModularityError(f"{where}: family {fam!r} is not one of {', '.join(FAMILIES)}")
        groups.append(RowGroup(fam, tuple(_require(g, "tags", where)), tuple(bool(p) for p in g.get("pruned", [False])),
                               tuple(int(k) for k in _require(g, "k", where)), " ".join(str(g.get("explain", "")).split())))
    return TableSpec(name=_require(data, "name", where), title=data.get("title", data["name"]), analysis=analysis,
                     paper=_require(data, "paper", where), note=" ".join(str(data.get("note", "")).split()),
                     columns=tuple(columns), rows=tuple(groups))


def load_tables(spec_dir: Path = SPEC_DIR) -> list[TableSpec]:
    """Every table spec, in the paper's order (unknown extra tables after, by name)."""
    specs = {}
    for path in sorted(spec_dir.glob("*.yaml")):
        if path.stem == "regression":
            continue
        spec = parse_table_spec(yaml.safe_load(path.read_text()), str(path))
        specs[spec.name] = spec
    order = [n for n in TABLE_ORDER if n in specs] + sorted(set(specs) - set(TABLE_ORDER))
    return [specs[n] for n in order]


# --------------------------------------------------------------------------------------------------
# Profiles


@dataclass(frozen=True)
class Profile:
    """One profile of ``params.yaml`` with per-family settings resolved on demand."""

    name: str
    raw: dict[str, Any]
    #: The other profiles of the same ``params.yaml`` (name -> raw), in file order: they name where a skipped
    #: row runs.
    others: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(self.raw.get("families") or FAMILIES)

    @property
    def tags(self) -> tuple[str, ...] | None:
        tags = self.raw.get("tags")
        return tuple(tags) if tags else None

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(int(k) for k in self.raw.get("k") or ())

    @property
    def report_dir(self) -> Path:
        return Path(self.raw.get("report_dir") or BENCHMARK_ROOT / self.name / "report")

    @property
    def root(self) -> Path:
        return BENCHMARK_ROOT / self.name

    @property
    def graph(self) -> dict[str, Any]:
        return dict(self.raw.get("graph") or {"conv_norm": "entrywise", "fold_batchnorm": True})

    @property
    def description(self) -> str:
        return " ".join(str(self.raw.get("description", "")).split())

    def seeds(self, family: str) -> tuple[int, ...]:
        seeds = self.raw.get("seeds", {"default": [0]})
        if isinstance(seeds, list):
            return tuple(seeds)
        return tuple(seeds.get(family, seeds.get("default", [0])))

    def section(self, name: str, family: str) -> dict[str, Any]:
        """Settings of section ``name`` (train, cluster, importance, coherence) for one family."""
        sec = self.raw.get(name) or {}
        out = dict(sec.get("default") or {})
        out.update(sec.get(family) or {})
        return out

    @property
    def threads(self) -> int:
        """Intra-op threads of every stage (torch and BLAS/OpenMP); part of what determines results."""
        return int(self.raw.get("threads") or 1)

    def selects(self, family: str, tag: str, k: int, analysis: str | None = None) -> str | None:
        """None if the profile runs this row, else the reason it does not.

        An analysis section may narrow the profile's k for a family (``k: [12]``), to fit a time budget.
        """
        if family not in self.families:
            return f"family {family} is not in the {self.name} profile"
        if self.tags is not None and tag not in self.tags:
            return f"tag {tag} is not in the {self.name} profile"
        if k not in self.ks:
            return f"k={k} is not in the {self.name} profile"
        if analysis is not None:
            ks = self.section(analysis, family).get("k")
            if ks is not None and k not in ks:
                return f"k={k} is not run for {analysis} of {family} nets in the {self.name} profile (time budget)"
        return None

    def runs_elsewhere(self, family: str, tag: str, k: int, analysis: str | None = None) -> str | None:
        """The first other profile (in ``params.yaml`` order) that runs a row this one skips, or None."""
        for name, raw in self.others.items():
            if Profile(name, raw).selects(family, tag, k, analysis) is None:
                return name
        return None


def load_params(path: Path = PARAMS) -> dict[str, Any]:
    if not path.is_file():
        raise ModularityError(f"parameters file not found: {path}")
    return yaml.safe_load(path.read_text()) or {}


def load_profile(name: str, params: dict[str, Any] | None = None, path: Path = PARAMS) -> Profile:
    params = load_params(path) if params is None else params
    profiles = params.get("profiles") or {}
    if name not in profiles:
        raise ModularityError(f"unknown profile {name!r}; known: {', '.join(profiles) or 'none'}")
    return Profile(name, profiles[name], {n: raw for n, raw in profiles.items() if n != name})


# --------------------------------------------------------------------------------------------------
# Rows and stages


@dataclass(frozen=True)
class Row:
    """One row of one table: a network (tag, pruned) at one k; ``skip`` says why it does not run."""

    table: str
    family: str
    tag: str
    pruned: bool
    k: int
    seeds: tuple[int, ...] = ()
    skip: str | None = None
    explain: str = ""  # the row group's explanation of a disagreement

    @property
    def key(self) -> tuple[str, bool, int]:
        return (self.tag, self.pruned, self.k)


@dataclass(frozen=True)
class Stage:
    """One cacheable unit of work (a DVC stage). ``ks`` is empty for training."""

    kind: str
    profile: str
    family: str
    tag: str
    seed: int
    pruned: bool = False
    ks: tuple[int, ...] = ()
    upstream: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """The item of the ``foreach`` of its kind in ``dvc.yaml``: ``<profile>-<tag>-s<seed>[-<state>]``."""
        base = f"{self.profile}-{slug(self.tag)}-s{self.seed}"
        return base if self.kind == "train" else f"{base}-{state(self.pruned)}"

    @property
    def group(self) -> str:
        """The templated stage of ``dvc.yaml`` it belongs to (ImageNet nets have no checkpoint dependency)."""
        return self.kind if self.kind == "train" or self.family != "imagenet" else f"{self.kind}_pretrained"

    @property
    def name(self) -> str:
        """The DVC stage name: ``<group>@<key>``, e.g. ``train@smoke-MNIST-s0``, ``cluster@smoke-MNIST-s0-pruned``."""
        return f"{self.group}@{self.key}"


def slug(tag: str) -> str:
    """A tag as DVC allows it in a stage name (letters, digits, '-' and '_')."""
    return tag.replace("+", "_")


def state(pruned: bool) -> str:
    return "pruned" if pruned else "unpruned"


def checkpoint_dir(root: Path, tag: str, seed: int) -> Path:
    return root / "checkpoints" / tag / f"seed{seed}"


def result_dir(root: Path, analysis: str, tag: str, seed: int, pruned: bool) -> Path:
    return root / "results" / tag / f"seed{seed}" / state(pruned) / analysis


def rows_of(table: TableSpec, profile: Profile) -> list[Row]:
    """Every row of ``table``, marked skipped where the profile does not run it."""
    rows = []
    for g in table.rows:
        for k in g.k:
            for pruned in g.pruned:
                for tag in g.tags:
                    reason = profile.selects(g.family, tag, k, table.analysis)
                    elsewhere = profile.runs_elsewhere(g.family, tag, k, table.analysis) if reason else None
                    if elsewhere:
                        reason += f" (`make reproduce PROFILE={elsewhere}` runs it)"
                    rows.append(Row(table.name, g.family, tag, pruned, k, profile.seeds(g.family), reason, g.explain))
    return rows


@dataclass
class Plan:
    profile: Profile
    tables: list[TableSpec]
    rows: list[Row]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def plan(profile: Profile, tables: list[TableSpec]) -> Plan:
    """Rows of every table and the stages (train first, then analyses) that the profile needs."""
    rows = [r for t in tables for r in rows_of(t, profile)]
    analysis_of = {t.name: t.analysis for t in tables}
    needed: dict[tuple[str, str, str, bool], set[int]] = {}
    families: dict[str, str] = {}
    for r in rows:
        if r.skip is None:
            needed.setdefault((analysis_of[r.table], r.family, r.tag, r.pruned), set()).add(r.k)
            families[r.tag] = r.family
    train: dict[tuple[str, int], Stage] = {}
    analyses: list[Stage] = []
    for (analysis, family, tag, pruned), ks in sorted(needed.items(), key=lambda kv: _stage_order(kv[0])):
        for seed in profile.seeds(family):
            upstream: tuple[str, ...] = ()
            if family != "imagenet":  # ImageNet nets are pretrained, not trained here
                t = train.setdefault((tag, seed), Stage("train", profile.name, family, tag, seed))
                upstream = (t.name,)
            analyses.append(Stage(analysis, profile.name, family, tag, seed, pruned, tuple(sorted(ks)), upstream))
    stages = list(train.values()) + analyses
    return Plan(profile, tables, rows, stages)


def _stage_order(key: tuple[str, str, str, bool]) -> tuple[int, int, str, bool]:
    analysis, family, tag, pruned = key
    return (FAMILIES.index(family), ANALYSES.index(analysis), tag, pruned)
