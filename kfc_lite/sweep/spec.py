"""A sweep as it will run: :class:`SweepSpec` (its datasets, methods, seeds, budget and ``set`` grid) and its trials.

Every trial is the product of one dataset, one method, one seed and one point of the ``set`` grid, and becomes
one ``kfc_lite.train`` run folder, ``<out>/<dataset>/<method>[-<grid point>]-seed<seed>/``;
:meth:`SweepSpec.train_config` builds its :class:`~kfc_lite.train.TrainConfig`. A SweepSpec is made from a sweep
file by :mod:`kfc_lite.sweep.sweep_file`, which checks everything first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import re

from kfc_lite.methods import METHODS
from kfc_lite.sweep.budgets import Budget

#: diagnostic variants: the residual ("gauged") symmetry s + D((I+sigma)E(s)) - D(E(s)), without the decoder's
#: reconstruction offset that the plain form adds to every augmented state
VARIANTS = ("kfc-gauged", "kfc++-gauged")
ALL_METHODS = METHODS + VARIANTS


class SweepSpecError(ValueError):
    """A sweep file that cannot run; the message names the key, the problem and the fix."""


def base_method(method: str) -> str:
    return method.removesuffix("-gauged")


def method_dir(method: str) -> str:
    """``kfc++`` -> ``kfcpp``: folder names without characters shells treat specially."""
    return method.replace("+", "p")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One entry of ``datasets``: a replica recipe (built by the sweep), a registered name, or an HDF5 file."""

    entry: str  #: as written in the sweep file
    kind: str  #: "replica", "name" or "file"
    name: str  #: the replica's or registry's name, or the file's absolute path
    size: int | None = None  #: a replica's number of transitions (None: D4RL's size)

    @property
    def label(self) -> str:
        """The dataset's folder name under ``out`` and its name in the results."""
        if self.kind == "replica":
            return f"{self.name}-{self.size or 'full'}"
        return pathlib.Path(self.name).stem if self.kind == "file" else self.name

    @property
    def report_name(self) -> str:
        return pathlib.Path(self.name).stem if self.kind == "file" else self.name


def parse_dataset(entry) -> Dataset:
    """Read one ``datasets`` entry: ``hopper-medium-replica[:size]``, ``hopper-medium-v2`` or ``path/to/file.hdf5``."""
    from kfc_lite.data import registry
    from kfc_lite.data.replicas import parse_recipe

    if not isinstance(entry, str) or not entry.strip():
        raise SweepSpecError(f"datasets: every entry is a string such as 'hopper-medium-replica:100000', got {entry!r}")
    text = entry.strip()
    if text.endswith((".hdf5", ".h5")) or os.sep in text:
        path = pathlib.Path(text).expanduser().resolve()
        if not path.is_file():
            raise SweepSpecError(
                f"datasets: no file {path} (from {entry!r}); an HDF5 file must exist before the sweep "
                "starts, at a path every node of the cluster sees"
            )
        return Dataset(entry, "file", str(path))
    name, colon, size_text = text.partition(":")
    try:
        env, kind = parse_recipe(name)
    except ValueError:
        env = None
    if env is not None:
        if colon and not re.fullmatch(r"[1-9][0-9]*", size_text):
            raise SweepSpecError(
                f"datasets: {entry!r}: the size after ':' is a positive whole number of transitions, "
                "e.g. hopper-medium-replica:100000"
            )
        return Dataset(entry, "replica", f"{env}-{kind}-replica", int(size_text) if colon else None)
    if colon:
        raise SweepSpecError(f"datasets: {entry!r}: only replica recipes (<env>-<kind>-replica) take a ':size'")
    if registry.is_known(name):
        return Dataset(entry, "name", name.strip().lower())
    try:
        registry.get(name)
    except ValueError as exc:
        raise SweepSpecError(
            f"datasets: {exc} A replica recipe (hopper-medium-replica:100000) or an HDF5 file path also works."
        ) from None
    raise SweepSpecError(f"datasets: unknown dataset {entry!r}")  # pragma: no cover (get() raised above)


@dataclasses.dataclass(frozen=True)
class Resources:
    """One trial's share of a node. Fractions of a GPU let several trials share one (Ray keeps the count).

    ``prepare_cpus`` is the share of one dataset's preparation (its data file, Koopman pre-training and symmetry
    tables; None: ``cpus``). It runs before any trial of that dataset, so on a node that waits for it, it may take
    the CPUs the trials will use; its torch threads follow it.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    prepare_cpus: float | None = None

    @property
    def preparation_cpus(self) -> float:
        return self.cpus if self.prepare_cpus is None else self.prepare_cpus


@dataclasses.dataclass
class Trial:
    """One run of the sweep: a dataset, a method, a seed and one point of the ``set`` grid."""

    dataset: Dataset
    method: str
    seed: int
    overrides: dict  #: the grid point and the fixed ``set`` values, as ``with_overrides`` keys
    tag: str  #: the grid point in words (empty when ``set`` has no list)

    @property
    def name(self) -> str:
        """The run folder relative to ``out``; also the trial's name in the live table and the results."""
        return f"{self.dataset.label}/{method_dir(self.method)}{'-' + self.tag if self.tag else ''}-seed{self.seed}"

    @property
    def label(self) -> str:
        """The method as the results tables name it: the method, and the grid point when there is one."""
        return f"{self.method}[{self.tag}]" if self.tag else self.method


@dataclasses.dataclass
class SweepSpec:
    """A validated sweep file; paths are absolute (resolved against the directory the sweep was started from)."""

    name: str
    out: pathlib.Path
    data: pathlib.Path
    datasets: tuple
    methods: tuple
    seeds: tuple
    budget: Budget
    sets: dict
    koopman: dict
    resources: Resources
    device: str
    max_failures: int
    download: bool
    source: dict  #: the sweep file as read, for sweep.json

    # -- the trials ---------------------------------------------------------------------------------------
    def grid(self) -> list[tuple[dict, str]]:
        """Every point of the ``set`` grid: (the overrides, the tag naming the varied keys)."""
        varied = [k for k, v in self.sets.items() if isinstance(v, list)]
        fixed = {k: v for k, v in self.sets.items() if not isinstance(v, list)}
        points = []
        for values in itertools.product(*(self.sets[k] for k in varied)):
            point = dict(zip(varied, values))
            tag = "-".join(f"{k}={_word(v)}" for k, v in point.items() if len(self.sets[k]) > 1)
            points.append(({**fixed, **point}, tag))
        return points

    def trials(self) -> list[Trial]:
        """Seeds outermost, so that every method has its first seed before any has its second."""
        return [
            Trial(ds, m, seed, overrides, tag)
            for seed in self.seeds
            for ds in self.datasets
            for overrides, tag in self.grid()
            for m in self.methods
        ]

    def needs_koopman(self) -> bool:
        return any(base_method(m) in ("kfc", "kfc++") for m in self.methods)

    # -- where things go ----------------------------------------------------------------------------------
    def dataset_path(self, ds: Dataset) -> str:
        """What ``TrainConfig.dataset`` is: the replica's file under ``data``, the HDF5 path, or the name."""
        if ds.kind == "replica":
            return str(self.data / f"{ds.label}.hdf5")
        return ds.name

    def dataset_dir(self, ds: Dataset) -> pathlib.Path:
        """The dataset's folder under ``out``: its Koopman model, symmetry tables and run folders."""
        return self.out / ds.label

    def koopman_path(self, ds: Dataset) -> pathlib.Path:
        return self.dataset_dir(ds) / "koopman.pt"

    def run_dir(self, trial: Trial) -> pathlib.Path:
        return self.out / trial.name

    def train_config(self, trial: Trial):
        """The trial's TrainConfig: the budget's settings, the method, the seed and the grid point."""
        from kfc_lite.train import TrainConfig

        method = base_method(trial.method)
        cfg = TrainConfig(
            dataset=self.dataset_path(trial.dataset),
            method=method,
            seed=trial.seed,
            device=self.device,
            download=self.download,
            out=str(self.run_dir(trial)),
            koopman_path=str(self.koopman_path(trial.dataset)) if method in ("kfc", "kfc++") else None,
        )
        budget = self.budget.train_settings()
        return cfg.with_overrides(**budget, **{"augment.gauged": trial.method.endswith("-gauged")}).with_overrides(
            **trial.overrides
        )

    def to_json(self) -> dict:
        """The sweep as it will run (sweep.json): a resumed sweep must be the same sweep."""
        return {
            "name": self.name,
            "out": str(self.out),
            "data": str(self.data),
            "datasets": [d.entry for d in self.datasets],
            "methods": list(self.methods),
            "seeds": list(self.seeds),
            "budget": dataclasses.asdict(self.budget),
            "set": self.sets,
            "koopman": self.koopman,
            "resources": dataclasses.asdict(self.resources),
            "device": self.device,
            "download": self.download,
            "trials": [t.name for t in self.trials()],
        }


def _word(value) -> str:
    """A grid value as it appears in a folder name: JSON, without characters a path cannot hold."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ""))
    return re.sub(r"[^A-Za-z0-9_.+,=-]", "_", text)
