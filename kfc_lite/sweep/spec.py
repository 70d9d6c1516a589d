"""The sweep file: what to run, checked completely before anything starts.

A sweep file is YAML::

    out: runs/sweeps/hopper            # the output root: one folder per dataset, one run folder per trial
    datasets: [hopper-medium-replica:100000, walker2d-medium-replica:100000]
    methods: [cql, s4rl, kfc, kfc++]
    seeds: [0, 1, 2, 3, 4]
    budget: cpu                         # a named budget, or {base: cpu, steps: 2000, ...}
    set:                                # `kfc-lite train --set` keys; a list of values is a grid dimension
      q_lr: [1.0e-4, 3.0e-4]
      noise_sigma: 0.003
    resources: {cpus: 1, gpus: 0.25}    # one trial's share of a node: four trials on one GPU
    device: auto
    max_failures: 3                     # retries of a trial whose process or node dies

Every trial is the product of one dataset, one method, one seed and one point of the ``set`` grid, and becomes
one ``kfc_lite.train`` run folder, ``<out>/<dataset>/<method>[-<grid point>]-seed<seed>/``. Everything that
can be wrong with a sweep file (an unknown dataset, method or key, a value of the wrong type, a budget whose
runs could not be scored) is found here, by building every trial's :class:`~kfc_lite.train.TrainConfig`, so a
sweep of a hundred runs does not fail an hour in on its ninety-first.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pathlib
import re

from kfc_lite.methods import METHODS
from kfc_lite.sweep.budgets import BUDGET_FIELDS, BUDGETS, Budget
from kfc_lite.validators import integer, is_integer, number

#: diagnostic variants: the residual ("gauged") symmetry s + D((I+sigma)E(s)) - D(E(s)), without the decoder's
#: reconstruction offset that the plain form adds to every augmented state
VARIANTS = ("kfc-gauged", "kfc++-gauged")
ALL_METHODS = METHODS + VARIANTS
KEYS = (
    "name",
    "out",
    "data",
    "datasets",
    "methods",
    "seeds",
    "budget",
    "set",
    "koopman",
    "resources",
    "device",
    "max_failures",
    "download",
)
#: TrainConfig fields the sweep sets itself, and the key of the sweep file that says what they are
OWNED = {
    "dataset": "datasets",
    "method": "methods",
    "gauged": "methods (kfc-gauged, kfc++-gauged)",
    "seed": "seeds",
    "out": "out",
    "koopman_path": "koopman (the model is trained once per dataset)",
    "koopman": "koopman",
    "device": "device",
    "download": "download",
    **{
        k: "budget"
        for k in (
            "steps",
            "eval_every",
            "eval_episodes",
            "eval_max_steps",
            "checkpoint_every",
            "log_every",
            "precision",
            "sac.precision",
        )
    },
}


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
    """One trial's share of a node. Fractions of a GPU let several trials share one (Ray keeps the count)."""

    cpus: float = 1.0
    gpus: float = 0.0


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

    def needs_koopman(self, dataset: Dataset | None = None) -> bool:
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


# -- reading and checking ----------------------------------------------------------------------------------
def _yaml_loader():
    """PyYAML's safe loader, also reading ``1e-4`` as a number (YAML 1.2 does; PyYAML's 1.1 rules want ``1.0e-4``
    and would hand a learning rate to the agent as the text "1e-4")."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def load_spec(path) -> SweepSpec:
    """Read and check a sweep file (YAML); :class:`SweepSpecError` says what is wrong and how to fix it."""
    import yaml

    path = pathlib.Path(path)
    if not path.is_file():
        raise SweepSpecError(f"no sweep file {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_yaml_loader())
    except yaml.YAMLError as exc:
        raise SweepSpecError(f"{path} is not valid YAML: {exc}") from None
    try:
        return spec_from_dict(raw, default_name=path.stem)
    except SweepSpecError as exc:
        raise SweepSpecError(f"sweep file {path}: {exc}") from None


def _list(raw: dict, key: str, default, kind, what: str) -> tuple:
    value = raw.get(key, default)
    if value is None:
        raise SweepSpecError(f"{key}: give a list of {what}")
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise SweepSpecError(f"{key}: the list is empty; give at least one of {what}")
    for v in values:
        if kind is int and not (is_integer(v) and v >= 0):
            raise SweepSpecError(f"{key}: every entry is a whole number >= 0, got {v!r}")
    if len(set(map(str, values))) != len(values):
        raise SweepSpecError(f"{key}: {values} lists an entry twice")
    return tuple(values)


def _checked(check, *args, **kwargs):
    """A shared check of :mod:`kfc_lite.validators`, its error raised as the sweep file's."""
    try:
        return check(*args, **kwargs)
    except ValueError as exc:
        raise SweepSpecError(str(exc)) from None


def _budget(value) -> Budget:
    if isinstance(value, Budget):  # from code (benchmarks/learning.py), already a whole budget
        return value
    if isinstance(value, str):
        if value not in BUDGETS:
            raise SweepSpecError(
                f"budget: unknown budget {value!r}; the named ones are {sorted(BUDGETS)}, or write a "
                f"mapping of {', '.join(BUDGET_FIELDS)} (with base: <name> to start from one)"
            )
        return BUDGETS[value]
    if not isinstance(value, dict):
        raise SweepSpecError(f"budget: a budget name ({', '.join(BUDGETS)}) or a mapping, got {value!r}")
    fields = dict(value)
    base = fields.pop("base", None)
    unknown = sorted(set(fields) - set(BUDGET_FIELDS))
    if unknown:
        raise SweepSpecError(f"budget: unknown key(s) {unknown}; a budget has {', '.join(BUDGET_FIELDS)} (and base)")
    if base is None:
        missing = [k for k in ("steps", "eval_every", "eval_episodes", "last_k") if k not in fields]
        if missing:
            raise SweepSpecError(f"budget: without base: <name> give {', '.join(missing)} too")
        start = Budget("custom", (), (), steps=1, eval_every=1, eval_episodes=1, last_k=1)
    else:
        start = _budget(base)
    for key in ("steps", "last_k", "log_every"):
        if key in fields:
            _checked(integer, f"budget.{key}", fields[key], 1)
    for key in ("eval_every", "eval_episodes"):
        if key in fields:
            _checked(integer, f"budget.{key}", fields[key], 0)
    if "eval_max_steps" in fields:
        _checked(integer, "budget.eval_max_steps", fields["eval_max_steps"], 1, allow_none=True)
    if "bc_fraction" in fields:
        _checked(number, "budget.bc_fraction", fields["bc_fraction"], 0, 1, allow_none=True)
    if "sac" in fields and not isinstance(fields["sac"], dict):
        raise SweepSpecError(
            f"budget.sac: a mapping of SACConfig fields (e.g. hidden: [64, 64]), got {fields['sac']!r}"
        )
    if "koopman" in fields and not isinstance(fields["koopman"], dict):
        raise SweepSpecError(f"budget.koopman: a mapping of KoopmanTrainConfig fields, got {fields['koopman']!r}")
    name = f"{start.name}+" if base is not None else "custom"
    return dataclasses.replace(start, name=name, **fields)


def spec_from_dict(raw, default_name: str = "sweep") -> SweepSpec:
    """Check a sweep given as a mapping (the parsed YAML) and resolve it; see the module docstring."""
    from kfc_lite.koopman.fit import KoopmanTrainConfig

    if not isinstance(raw, dict):
        raise SweepSpecError(f"a sweep file is a mapping of {', '.join(KEYS)}; got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SweepSpecError(f"unknown key(s) {unknown}; a sweep file has {', '.join(KEYS)}")
    if not isinstance(raw.get("out"), str) or not raw["out"].strip():
        raise SweepSpecError(
            "out: the output root (a folder every node sees) is required, e.g. out: runs/sweeps/hopper"
        )
    out = pathlib.Path(raw["out"]).expanduser().resolve()
    data = pathlib.Path(raw.get("data") or out / "data").expanduser().resolve()
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepSpecError(f"name: letters, digits, '_', '.' and '-' only, got {name!r}")

    budget = _budget(raw.get("budget", "tiny"))
    methods = _list(raw, "methods", METHODS, str, "methods")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise SweepSpecError(f"methods: unknown method(s) {bad}; choose from {', '.join(ALL_METHODS)}")
    seeds = _list(raw, "seeds", budget.seeds or None, int, "seeds")
    datasets = tuple(parse_dataset(d) for d in _list(raw, "datasets", budget.datasets or None, str, "datasets"))
    labels = [d.label for d in datasets]
    if len(set(labels)) != len(labels):
        raise SweepSpecError(f"datasets: two entries share one folder name ({labels}): list each dataset once")
    evaluations = budget.steps // budget.eval_every if budget.eval_every else 1
    if budget.eval_episodes == 0 or evaluations < budget.last_k:
        raise SweepSpecError(
            f"budget: a run is scored by its last {budget.last_k} evaluations, but {budget.steps} steps "
            f"evaluated every {budget.eval_every} with {budget.eval_episodes} episodes give "
            f"{evaluations if budget.eval_episodes else 0}: lower last_k or evaluate more often"
        )

    koopman = raw.get("koopman", budget.koopman)
    if not isinstance(koopman, dict):
        raise SweepSpecError(f"koopman: a mapping of KoopmanTrainConfig fields (e.g. max_steps: 1000), got {koopman!r}")
    try:
        KoopmanTrainConfig(**{"seed": 0, **koopman})
    except TypeError as exc:
        names = sorted(f.name for f in dataclasses.fields(KoopmanTrainConfig))
        raise SweepSpecError(f"koopman: {exc}; its fields are {names}") from None
    except ValueError as exc:
        raise SweepSpecError(f"koopman: {exc}") from None

    sets = raw.get("set") or {}
    if not isinstance(sets, dict):
        raise SweepSpecError(f"set: a mapping of --set keys to a value or a list of values, got {sets!r}")
    for key, value in sets.items():
        if not isinstance(key, str):
            raise SweepSpecError(f"set: keys are setting names such as q_lr, got {key!r}")
        if key.startswith("koopman."):
            raise SweepSpecError(
                f"set: {key}: the Koopman model is trained once per dataset for every trial; put its "
                f"settings under koopman: ({key.removeprefix('koopman.')}: ...)"
            )
        if key in OWNED:
            raise SweepSpecError(f"set: {key} is set by the sweep itself: use {OWNED[key]}")
        if isinstance(value, list) and not value:
            raise SweepSpecError(
                f"set: {key}: an empty list gives no trial; give values (a list value itself is "
                f"written as a list of one list: [[256, 256]])"
            )

    res = raw.get("resources") or {}
    if not isinstance(res, dict) or set(res) - {"cpus", "gpus"}:
        raise SweepSpecError(f"resources: a mapping with cpus and gpus (one trial's share), got {res!r}")
    resources = Resources(
        cpus=_checked(number, "resources.cpus", res.get("cpus", 1), 0.01),
        gpus=_checked(number, "resources.gpus", res.get("gpus", 0), 0),
    )
    if resources.gpus > 1 and resources.gpus != int(resources.gpus):
        raise SweepSpecError(f"resources.gpus: a fraction of one GPU or a whole number of GPUs, got {resources.gpus}")
    device = raw.get("device", "cuda" if resources.gpus > 0 else "cpu")
    if not isinstance(device, str):
        raise SweepSpecError(f"device: auto, cpu, cuda or cuda:N, got {device!r}")
    if resources.gpus == 0 and device.startswith("cuda"):
        raise SweepSpecError(
            f"device: {device} needs a GPU, but resources.gpus is 0: give each trial a share "
            "(resources: {gpus: 0.25})"
        )
    max_failures = _checked(integer, "max_failures", raw.get("max_failures", 3), 0)
    download = raw.get("download", False)
    if not isinstance(download, bool):
        raise SweepSpecError(f"download: true or false, got {download!r}")

    spec = SweepSpec(
        name=name,
        out=out,
        data=data,
        datasets=datasets,
        methods=methods,
        seeds=seeds,
        budget=budget,
        sets=dict(sets),
        koopman=dict(koopman),
        resources=resources,
        device=device,
        max_failures=max_failures,
        download=download,
        source=dict(raw),
    )
    # Every trial's TrainConfig, now: unknown --set keys and values of the wrong type fail here, with their message.
    for trial in spec.trials():
        try:
            spec.train_config(trial)
        except (ValueError, TypeError) as exc:
            raise SweepSpecError(f"trial {trial.name}: {exc}") from None
    return spec
