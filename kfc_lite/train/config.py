"""What a training run depends on: :class:`TrainConfig`, the typed configs it holds, and how ``--set`` reaches them.

A run is described by one :class:`TrainConfig`, validated when it is made and saved as the run folder's
``config.json``. It holds three typed configs, each a dataclass with its own checks:

* ``sac``: the agent, a :class:`~kfc_lite.rl.config.SACConfig` (``SACConfig.preset("corl", bc_steps=0)``);
* ``augment``: how S4RL, KFC and KFC++ perturb a batch, an :class:`AugmentConfig`;
* ``koopman``: the Koopman model's pre-training, a :class:`~kfc_lite.koopman.objective.KoopmanTrainConfig`
  (None: the paper's schedule seeded by the run's seed).

:meth:`TrainConfig.with_overrides` takes flat ``key=value`` pairs (the command line's ``--set``, a sweep file's
``set:``) and sends each to the config that has the field: ``q_lr`` or ``sac.q_lr`` to ``sac``, ``noise_sigma`` or
``augment.noise_sigma`` to ``augment``, ``koopman.max_epochs`` to ``koopman``. A ``config.json`` written before
the configs were nested (the agent as a preset name and a dict of changes, the augmentation's fields at the top)
is read into this layout by :meth:`TrainConfig.from_dict`, so those runs resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kfc_lite.methods import KOOPMAN_METHODS, METHODS
from kfc_lite.rl.config import SACConfig
from kfc_lite.validators import flag, integer, number, one_of

if TYPE_CHECKING:  # imported where used: its module loads torch, which importing this one does not
    from kfc_lite.koopman.objective import KoopmanTrainConfig

__all__ = [
    "TrainConfig",
    "AugmentConfig",
    "METHODS",
    "KOOPMAN_METHODS",
    "KOOPMAN_GATES",
    "RESUMABLE_CHANGES",
    "REMOVED_FIELDS",
]

#: what train() does when the Koopman report's gate is triggered (kfc_lite.koopman.report)
KOOPMAN_GATES = ("warn", "error", "off")
#: settings that may change between a run and its resumption (they do not change what is computed per step)
RESUMABLE_CHANGES = (
    "steps",
    "device",
    "eval_every",
    "eval_episodes",
    "eval_max_steps",
    "checkpoint_every",
    "log_every",
    "out",
    "download",
    "augment.table_memory_gb",
    "koopman_gate",
)
#: fields of earlier versions that no longer exist: a saved config that has them loads without them, with a note
REMOVED_FIELDS = {"eig_workers": "the symmetry table replaced the look-ahead decomposition workers"}


@dataclass
class AugmentConfig:
    """How S4RL, KFC and KFC++ perturb a batch (docs/paper.md, 'The symmetry augmentation'). Validated on creation.

    ``noise_sigma`` is S4RL's Gaussian noise (also KFC's fall-back branch); ``shift_sigma`` the symmetry's scale
    (units of 3e-3 for KFC++); ``p_koopman`` the probability of the symmetry branch, drawn once ``per`` batch (the
    authors' code) or sample; ``gauged`` the residual form ``s + D((I+sigma)E(s)) - D(E(s))``. KFC and KFC++ read
    each transition's symmetry from a table computed once per dataset (:mod:`kfc_lite.symmetry_table`):
    ``table_storage`` is the dtype of its stored bases ("float16", "float32" or "bfloat16"; the error each gives is
    in benchmarks/results/memory.md), ``table_memory_gb`` the size above which it is memory-mapped from disk.
    CQL reads none of these; S4RL only ``noise_sigma``.
    """

    noise_sigma: float = 3e-3
    shift_sigma: float = 1.0
    p_koopman: float = 0.8
    per: str = "batch"
    gauged: bool = False
    table_storage: str = "float16"
    table_memory_gb: float = 8.0

    def __post_init__(self):
        from kfc_lite.symmetry_table import STORAGE_DTYPES

        number("AugmentConfig.noise_sigma", self.noise_sigma, 0.0)
        number("AugmentConfig.shift_sigma", self.shift_sigma, 0.0)
        number("AugmentConfig.p_koopman", self.p_koopman, 0.0, 1.0)
        one_of("AugmentConfig.per", self.per, ("batch", "sample"), "'batch': one draw per batch, the authors' code")
        flag("AugmentConfig.gauged", self.gauged)
        one_of("AugmentConfig.table_storage", self.table_storage, tuple(sorted(STORAGE_DTYPES)))
        number("AugmentConfig.table_memory_gb", self.table_memory_gb, 0.0)

    def augmenter_kwargs(self, method: str) -> dict:
        """The keyword arguments :func:`~kfc_lite.rl.augment.make_augmenter` takes for ``method``."""
        if method == "cql":
            return {}
        if method == "s4rl":
            return {"sigma": self.noise_sigma}
        return {
            "shift_sigma": self.shift_sigma,
            "p_koopman": self.p_koopman,
            "per": self.per,
            "gauged": self.gauged,
            "noise_sigma": self.noise_sigma,
        }


@dataclass
class TrainConfig:
    """Everything a training run depends on. Validated on creation; saved as ``config.json`` with the run.

    Data and task: ``dataset`` (a name such as ``hopper-medium-v2`` / ``hopper-medium-replica``, or an HDF5
    path), ``env`` (a D4RL family or gymnasium id, only needed when the dataset's name and metadata do not
    tell), ``download`` (fetch a D4RL file that is not in the cache).

    Method: ``method`` in cql, s4rl, kfc, kfc++; ``augment`` (an :class:`AugmentConfig`) says how the last three
    perturb a batch.

    Agent: ``sac``, a :class:`~kfc_lite.rl.config.SACConfig` (default: the authors' KFC code, the ``kfc-code``
    preset; ``SACConfig.preset("corl")`` for another). Its ``precision`` "auto" is fp32 for every method on every
    device: bf16 rounds the critic's activations to 3 significant digits, which erases the state shifts S4RL, KFC
    and KFC++ are about (docs/precision.md), and a comparison of methods must run them all at one precision.

    Koopman model (KFC, KFC++): ``koopman`` (a :class:`~kfc_lite.koopman.objective.KoopmanTrainConfig`; None: the
    paper's schedule with the run's seed) or ``koopman_path`` (a file from ``save_koopman``, used as is). Once the
    model is there, its quality report is computed, saved and printed; ``koopman_gate`` says what happens when
    the plain form's shift is dominated by the model's reconstruction offset (offset / symmetry shift above
    :data:`~kfc_lite.koopman.report.OFFSET_DOMINATES_RATIO`): "warn" (a RuntimeWarning with the numbers and the
    remedies), "error" (a ValueError before the symmetry table and the agent) or "off". The gauged form is never
    gated: its shift does not contain the offset. docs/koopman-quality.md explains the numbers.

    Loop: ``steps`` (total gradient steps), ``seed``, ``device``, ``log_every``, ``eval_every`` (0: only at
    the end), ``eval_episodes`` (0: never), ``eval_max_steps`` (cut evaluation episodes; None: the env's
    1000), ``checkpoint_every`` (0: only at the end), ``out`` (the run folder; default
    ``runs/<dataset>-<method>-seed<seed>``), ``sampling`` ("epoch": shuffled passes over the data as the authors'
    loader; "uniform": with replacement, as rlkit's CQL and d3rlpy).
    """

    dataset: str
    method: str = "kfc++"
    env: str | None = None
    steps: int = 1_000_000
    seed: int = 0
    device: str = "auto"
    out: str | None = None
    download: bool = False
    # evaluation, logging, checkpoints
    eval_every: int = 5000
    eval_episodes: int = 10
    eval_max_steps: int | None = None
    log_every: int = 1000
    checkpoint_every: int = 10_000
    sampling: str = "epoch"
    # what is trained, and on what
    sac: SACConfig = field(default_factory=SACConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    koopman: KoopmanTrainConfig | None = None
    koopman_path: str | None = None
    koopman_gate: str = "warn"

    def __post_init__(self):
        if not isinstance(self.dataset, (str, os.PathLike)) or not str(self.dataset).strip():
            raise ValueError(
                f"TrainConfig.dataset must be a dataset name (e.g. 'hopper-medium-v2') or an HDF5 path, "
                f"got {self.dataset!r}"
            )
        self.dataset = os.fspath(self.dataset)
        self.method = str(self.method).strip().lower()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {METHODS}")
        integer("TrainConfig.steps", self.steps, 1)
        integer("TrainConfig.seed", self.seed, 0)
        for name in ("eval_every", "eval_episodes", "checkpoint_every"):
            integer(f"TrainConfig.{name}", getattr(self, name), 0)
        integer("TrainConfig.log_every", self.log_every, 1)
        integer("TrainConfig.eval_max_steps", self.eval_max_steps, 1, allow_none=True)
        one_of(
            "TrainConfig.sampling",
            self.sampling,
            ("epoch", "uniform"),
            "'epoch': shuffled passes, the authors' loader; 'uniform': with replacement",
        )
        flag("TrainConfig.download", self.download)
        _typed("sac", self.sac, SACConfig, 'SACConfig.preset("kfc-code", q_lr=1e-4)')
        _typed("augment", self.augment, AugmentConfig, "AugmentConfig(noise_sigma=1e-2)")
        if self.koopman is not None:
            from kfc_lite.koopman.objective import KoopmanTrainConfig

            _typed("koopman", self.koopman, KoopmanTrainConfig, "KoopmanTrainConfig(max_epochs=100)")
        if self.koopman_path is not None and self.method not in KOOPMAN_METHODS:
            raise ValueError(
                f"koopman_path is only used by kfc and kfc++, not by {self.method!r}; drop it or change the method"
            )
        if self.koopman_path is not None and self.koopman is not None:
            raise ValueError(
                "give either koopman_path (a pre-trained model, used as is) or koopman (settings to "
                "pre-train one), not both"
            )
        one_of(
            "TrainConfig.koopman_gate",
            self.koopman_gate,
            KOOPMAN_GATES,
            "what to do when the Koopman model's reconstruction offset dominates the plain augmentation",
        )
        if self.out is None:
            stem = (
                pathlib.Path(self.dataset).stem
                if os.sep in self.dataset or self.dataset.endswith((".hdf5", ".h5"))
                else self.dataset
            )
            self.out = os.path.join("runs", f"{stem}-{self.method}-seed{self.seed}")
        self.out = os.fspath(self.out)

    # -- what the run builds from it ---------------------------------------------------------------------
    def sac_config(self, device) -> SACConfig:
        """The agent's :class:`SACConfig` with its "auto" precision and compile resolved for ``device``."""
        return self.sac.for_device(device)

    def koopman_config(self) -> KoopmanTrainConfig:
        """The Koopman pre-training's config: ``koopman``, or the paper's schedule seeded by the run's seed."""
        from kfc_lite.koopman.objective import KoopmanTrainConfig

        return KoopmanTrainConfig(seed=self.seed) if self.koopman is None else self.koopman

    def augmenter_kwargs(self) -> dict:
        """The keyword arguments of :func:`~kfc_lite.rl.augment.make_augmenter` for this run's method."""
        return self.augment.augmenter_kwargs(self.method)

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: the nested configs as dicts of their fields (``config.json``'s ``train``)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """The inverse of :meth:`to_dict`; also reads the flat layout of earlier versions (see the module)."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(cls)}
        for old in sorted(set(d) & set(REMOVED_FIELDS) - names):
            warnings.warn(f"TrainConfig.{old} is no longer a setting ({REMOVED_FIELDS[old]}): ignored", stacklevel=2)
            del d[old]
        if _is_flat_layout(d):
            d = _nest_flat_layout(d)
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {unknown}; its fields are {sorted(names)}")
        if isinstance(d.get("sac"), dict):
            d["sac"] = SACConfig.from_dict(d["sac"])
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**_known(AugmentConfig, d["augment"], "augment"))
        if isinstance(d.get("koopman"), dict):
            d["koopman"] = _koopman_from_dict(d["koopman"])
        return cls(**d)

    def with_overrides(self, **kv) -> TrainConfig:
        """A copy with settings changed, each sent to the config that has the field.

        ``cfg.with_overrides(steps=10, q_lr=1e-3, noise_sigma=1e-2, **{"koopman.max_epochs": 5})``: ``steps`` is
        TrainConfig's, ``q_lr`` SACConfig's (also as ``sac.q_lr``), ``noise_sigma`` AugmentConfig's (also as
        ``augment.noise_sigma``), ``koopman.max_epochs`` KoopmanTrainConfig's (starting from the paper's schedule
        with the run's seed, after ``seed`` is changed, when the run has no ``koopman`` yet).
        """
        from kfc_lite.koopman.objective import KoopmanTrainConfig

        parts = {"sac": {}, "augment": {}, "koopman": {}}
        own = {}
        for key, value in kv.items():
            part, name = _route(key)
            if part is None:
                own[name] = value
            else:
                parts[part][name] = value
        new = dataclasses.replace(self, **own) if own else self
        changes = {}
        if parts["sac"]:
            changes["sac"] = SACConfig.from_dict({**new.sac.to_dict(), **parts["sac"]})
        if parts["augment"]:
            changes["augment"] = dataclasses.replace(new.augment, **parts["augment"])
        if parts["koopman"]:
            _known(KoopmanTrainConfig, parts["koopman"], "koopman")
            changes["koopman"] = _koopman_from_dict({**new.koopman_config().to_dict(), **parts["koopman"]})
        return dataclasses.replace(new, **changes) if changes else new


# -- helpers: type checks, routing a flat key, reading the flat layout -----------------------------------------
def _typed(name: str, value, cls, example: str) -> None:
    if not isinstance(value, cls):
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise ValueError(
            f"TrainConfig.{name} must be {article} {cls.__name__}, e.g. {name}={example}, got {type(value).__name__} "
            f"{value!r}; from flat key=value settings, use TrainConfig.with_overrides"
        )


def _fields(cls) -> set:
    return {f.name for f in dataclasses.fields(cls)}


def _known(cls, values: dict, part: str) -> dict:
    unknown = sorted(set(values) - _fields(cls))
    if unknown:
        raise ValueError(
            f"TrainConfig.{part}: {cls.__name__} has no field(s) {unknown}; its fields are {sorted(_fields(cls))}"
        )
    return dict(values)


def _koopman_from_dict(values: dict):
    from kfc_lite.koopman.objective import KoopmanTrainConfig

    values = _known(KoopmanTrainConfig, values, "koopman")
    if isinstance(values.get("stop_recon_and_forward"), list):  # JSON has no tuples
        values["stop_recon_and_forward"] = tuple(values["stop_recon_and_forward"])
    return KoopmanTrainConfig(**values)


def _route(key: str) -> tuple[str | None, str]:
    """Which config a flat key belongs to: (None, name) for TrainConfig's own fields, else (part, name)."""
    from kfc_lite.koopman.objective import KoopmanTrainConfig

    prefix, _, name = key.rpartition(".")
    owners = {"sac": SACConfig, "augment": AugmentConfig, "koopman": KoopmanTrainConfig}
    if prefix in owners:
        if name not in _fields(owners[prefix]):
            raise ValueError(
                f"{key}: {owners[prefix].__name__} has no such field; its fields are {sorted(_fields(owners[prefix]))}"
            )
        return prefix, name
    own = _fields(TrainConfig) - set(owners)
    if not prefix and key in own:
        return None, key
    for part in ("sac", "augment"):  # unambiguous: no field name is shared by two of them
        if not prefix and key in _fields(owners[part]):
            return part, key
    raise ValueError(
        f"unknown setting {key!r}: use a TrainConfig field ({', '.join(sorted(own))}), a SACConfig field (e.g. "
        f"q_lr, bc_steps, precision), an AugmentConfig field (e.g. noise_sigma, gauged) or koopman.<field>"
    )


#: the top-level fields of a flat-layout config.json that belong to AugmentConfig
_FLAT_AUGMENT = tuple(f.name for f in dataclasses.fields(AugmentConfig))


def _is_flat_layout(d: dict) -> bool:
    return "preset" in d or any(k in d for k in _FLAT_AUGMENT) or "precision" in d or "compile" in d


def _nest_flat_layout(d: dict) -> dict:
    """A config.json ``train`` of the flat layout, in the nested one: the preset and its changes become a whole
    SACConfig (with the run's precision and compile), the augmentation's fields an AugmentConfig, and the Koopman
    changes a whole KoopmanTrainConfig seeded as that layout seeded it (by the run's seed unless set)."""
    d = dict(d)
    sac_changes = dict(d.pop("sac", None) or {})
    sac_changes.setdefault("precision", d.pop("precision", "auto"))
    sac_changes.setdefault("compile", d.pop("compile", "auto"))
    d["sac"] = SACConfig.preset(d.pop("preset", "kfc-code"), **sac_changes).to_dict()
    d["augment"] = {k: d.pop(k) for k in _FLAT_AUGMENT if k in d}
    koopman = d.pop("koopman", None) or {}
    d["koopman"] = {"seed": d.get("seed", 0), **koopman} if koopman else None
    return d
