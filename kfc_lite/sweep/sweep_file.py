"""The sweep file: what to run, read and checked completely before anything starts (:func:`load_spec`).

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
import pathlib
import re

from kfc_lite.methods import METHODS
from kfc_lite.sweep.budgets import BUDGET_FIELDS, BUDGETS, Budget
from kfc_lite.sweep.spec import ALL_METHODS, Resources, SweepSpec, SweepSpecError, parse_dataset
from kfc_lite.validators import integer, is_integer, number

__all__ = ["load_spec", "spec_from_dict", "KEYS", "OWNED"]

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
#: settings the sweep sets itself, and the key of the sweep file that says what they are; a key of a nested config
#: (``augment.gauged``, ``sac.precision``) is looked up by its field name
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
        )
    },
}


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
    """Check a sweep given as a mapping (the parsed YAML) and resolve it; see the module docstring.

    The keys are checked one section at a time (where it goes, what runs, the Koopman model, the ``set`` grid,
    where it runs), then every trial's TrainConfig is built, so that whatever ``kfc-lite train`` would refuse is
    refused here, before anything starts."""
    if not isinstance(raw, dict):
        raise SweepSpecError(f"a sweep file is a mapping of {', '.join(KEYS)}; got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise SweepSpecError(f"unknown key(s) {unknown}; a sweep file has {', '.join(KEYS)}")
    name, out, data = _where(raw, default_name)
    budget = _budget(raw.get("budget", "tiny"))
    methods, seeds, datasets = _what(raw, budget)
    koopman, sets = _koopman(raw, budget), _sets(raw)
    resources, device = _resources(raw)
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
        sets=sets,
        koopman=koopman,
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


def _where(raw: dict, default_name: str) -> tuple[str, pathlib.Path, pathlib.Path]:
    """``name``, ``out`` (required) and ``data`` (default: ``out/data``), as absolute paths."""
    if not isinstance(raw.get("out"), str) or not raw["out"].strip():
        raise SweepSpecError(
            "out: the output root (a folder every node sees) is required, e.g. out: runs/sweeps/hopper"
        )
    out = pathlib.Path(raw["out"]).expanduser().resolve()
    data = pathlib.Path(raw.get("data") or out / "data").expanduser().resolve()
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepSpecError(f"name: letters, digits, '_', '.' and '-' only, got {name!r}")
    return name, out, data


def _what(raw: dict, budget: Budget) -> tuple[tuple, tuple, tuple]:
    """``methods``, ``seeds`` and ``datasets`` (the budget's when not given), and a budget that can score them."""
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
    return methods, seeds, datasets


def _koopman(raw: dict, budget: Budget) -> dict:
    """``koopman``: the KoopmanTrainConfig fields of the model trained once per dataset (default: the budget's)."""
    from kfc_lite.koopman.fit import KoopmanTrainConfig

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
    return dict(koopman)


def _sets(raw: dict) -> dict:
    """``set``: ``--set`` keys to a value or a list of values (a grid dimension); keys the sweep owns are refused."""
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
        field = key.removeprefix("sac.").removeprefix("augment.")
        if field in OWNED:
            raise SweepSpecError(f"set: {key} is set by the sweep itself: use {OWNED[field]}")
        if isinstance(value, list) and not value:
            raise SweepSpecError(
                f"set: {key}: an empty list gives no trial; give values (a list value itself is "
                f"written as a list of one list: [[256, 256]])"
            )
    return dict(sets)


def _resources(raw: dict) -> tuple[Resources, str]:
    """``resources`` (one trial's share, one preparation's) and the ``device`` they allow."""
    res = raw.get("resources") or {}
    if not isinstance(res, dict) or set(res) - {"cpus", "gpus", "prepare_cpus"}:
        raise SweepSpecError(
            f"resources: a mapping with cpus and gpus (one trial's share) and optionally prepare_cpus (one "
            f"dataset's preparation), got {res!r}"
        )
    resources = Resources(
        cpus=_checked(number, "resources.cpus", res.get("cpus", 1), 0.01),
        gpus=_checked(number, "resources.gpus", res.get("gpus", 0), 0),
        prepare_cpus=_checked(number, "resources.prepare_cpus", res.get("prepare_cpus"), 0.01, allow_none=True),
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
    return resources, device
