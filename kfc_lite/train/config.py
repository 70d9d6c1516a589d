"""What a training run depends on: :class:`TrainConfig`, its checks, and how ``--set key=value`` reaches it.

A run is described by one :class:`TrainConfig`, validated when it is made and saved as the run folder's
``config.json``. The agent's settings are a :class:`~kfc_lite.rl.sac.SACConfig` (a preset plus overrides) and the
Koopman model's a :class:`~kfc_lite.koopman.KoopmanTrainConfig`; :meth:`TrainConfig.with_overrides` routes a flat
``key=value`` (the command line's ``--set``, a sweep file's ``set:``) to whichever of the three has the field.
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
from kfc_lite.validators import flag, integer, number, one_of

if TYPE_CHECKING:  # imported where used: building a config should not load torch
    from kfc_lite.rl.sac import SACConfig

__all__ = ["TrainConfig", "METHODS", "KOOPMAN_METHODS", "KOOPMAN_GATES", "RESUMABLE_CHANGES", "REMOVED_FIELDS"]

#: what train() does when the Koopman report's gate is triggered (kfc_lite.koopman.report)
KOOPMAN_GATES = ("warn", "error", "off")
#: fields that may change between a run and its resumption (they do not change what is computed per step)
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
    "table_memory_gb",
    "koopman_gate",
)
#: fields of earlier versions that no longer exist: a saved config that has them loads without them, with a note
REMOVED_FIELDS = {"eig_workers": "the symmetry table replaced the look-ahead decomposition workers"}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Validated on creation; saved as ``config.json`` with the run.

    Data and task: ``dataset`` (a name such as ``hopper-medium-v2`` / ``hopper-medium-replica``, or an HDF5
    path), ``env`` (a D4RL family or gymnasium id, only needed when the dataset's name and metadata do not
    tell), ``download`` (fetch a D4RL file that is not in the cache).

    Method: ``method`` in cql, s4rl, kfc, kfc++. Augmentation (docs/paper.md, 'The symmetry augmentation'):
    ``noise_sigma`` is S4RL's noise (also KFC's fall-back branch), ``shift_sigma`` the symmetry scale (units of 3e-3
    for KFC++), ``p_koopman`` the probability of the symmetry branch, drawn once ``per`` batch (the authors' code)
    or sample, ``gauged`` the residual form ``s + D((I+sigma)E(s)) - D(E(s))``. KFC and KFC++ read each transition's
    symmetry from a table computed once per dataset (:mod:`kfc_lite.symmetry_table`), cached beside the Koopman
    model: ``table_storage`` is the dtype of its stored bases ("float16", "float32" or "bfloat16"; the error each
    gives is in benchmarks/results/memory.md), ``table_memory_gb`` the size above which the table is memory-mapped
    from disk instead of read into memory.

    Agent: ``preset`` (``kfc-code``, ``cql-paper``, ``corl``) and ``sac`` (a dict of :class:`SACConfig`
    fields that override it). ``precision`` ("auto", "fp32", "bf16"): "auto" is fp32 for every method on every
    device. bf16 rounds the critic's activations to 3 significant digits, which erases the state shifts that
    S4RL, KFC and KFC++ are about (a 3e-3 shift moves a 3x256 critic's output by less than bf16's rounding:
    docs/precision.md), and a comparison of methods must run them all at one precision; bf16 is there to ask
    for, for CQL alone or for speed measurements. ``compile`` ("auto", True, False): "auto" turns
    ``torch.compile`` on for CUDA and off on the CPU.

    Koopman model (KFC, KFC++): ``koopman`` (a dict of :class:`~kfc_lite.koopman.KoopmanTrainConfig` fields;
    its seed defaults to ``seed``) or ``koopman_path`` (a file from ``save_koopman``, used as is). Once the model
    is there, its quality report is computed, saved and printed; ``koopman_gate`` says what happens when the
    plain form's shift is dominated by the model's reconstruction offset (offset / symmetry shift above
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
    # agent
    preset: str = "kfc-code"
    sac: dict = field(default_factory=dict)
    precision: str = "auto"
    compile: object = "auto"
    # augmentation
    noise_sigma: float = 3e-3
    shift_sigma: float = 1.0
    p_koopman: float = 0.8
    per: str = "batch"
    gauged: bool = False
    table_storage: str = "float16"
    table_memory_gb: float = 8.0
    # Koopman model
    koopman: dict = field(default_factory=dict)
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
        if self.sampling not in ("epoch", "uniform"):
            raise ValueError(
                f"TrainConfig.sampling must be 'epoch' (shuffled passes, the authors' loader) or 'uniform' "
                f"(with replacement), got {self.sampling!r}"
            )
        one_of("TrainConfig.precision", self.precision, ("auto", "fp32", "bf16"))
        if self.compile != "auto" and not isinstance(self.compile, bool):
            raise ValueError(f"TrainConfig.compile must be 'auto', True or False, got {self.compile!r}")
        flag("TrainConfig.gauged", self.gauged)
        flag("TrainConfig.download", self.download)
        number("TrainConfig.noise_sigma", self.noise_sigma, 0.0)
        number("TrainConfig.shift_sigma", self.shift_sigma, 0.0)
        number("TrainConfig.p_koopman", self.p_koopman, 0.0, 1.0)
        one_of("TrainConfig.per", self.per, ("batch", "sample"), "'batch': one draw per batch, the authors' code")
        from kfc_lite.symmetry_table import STORAGE_DTYPES

        if self.table_storage not in STORAGE_DTYPES:
            raise ValueError(
                f"TrainConfig.table_storage must be one of {sorted(STORAGE_DTYPES)}, got {self.table_storage!r}"
            )
        number("TrainConfig.table_memory_gb", self.table_memory_gb, 0.0)
        if not isinstance(self.sac, dict) or not isinstance(self.koopman, dict):
            raise ValueError(
                "TrainConfig.sac and TrainConfig.koopman are dicts of field overrides, e.g. sac={'q_lr': 1e-4}"
            )
        for key in ("precision", "compile"):
            if key in self.sac:
                raise ValueError(f"set {key} on TrainConfig (TrainConfig.{key}), not inside TrainConfig.sac")
        self.sac_config("cpu")  # validates the preset and every override now, with SACConfig's messages
        if self.koopman_path is not None and self.method not in KOOPMAN_METHODS:
            raise ValueError(
                f"koopman_path is only used by kfc and kfc++, not by {self.method!r}; drop it or change the method"
            )
        if self.koopman_path is not None and self.koopman:
            raise ValueError(
                "give either koopman_path (a pre-trained model, used as is) or koopman (settings to "
                "pre-train one), not both"
            )
        self.koopman_config()  # validates the Koopman overrides
        if self.koopman_gate not in KOOPMAN_GATES:
            raise ValueError(
                f"TrainConfig.koopman_gate must be one of {KOOPMAN_GATES} (what to do when the Koopman "
                f"model's reconstruction offset dominates the plain augmentation), got {self.koopman_gate!r}"
            )
        if self.out is None:
            stem = (
                pathlib.Path(self.dataset).stem
                if os.sep in self.dataset or self.dataset.endswith((".hdf5", ".h5"))
                else self.dataset
            )
            self.out = os.path.join("runs", f"{stem}-{self.method}-seed{self.seed}")
        self.out = os.fspath(self.out)

    # -- derived configs --------------------------------------------------------------------------------
    def sac_config(self, device) -> SACConfig:
        """The agent's :class:`SACConfig`: the preset, the overrides, and precision/compile resolved for ``device``."""
        from kfc_lite.rl.sac import SACConfig

        cuda = str(device).startswith("cuda")
        precision = "fp32" if self.precision == "auto" else self.precision
        compile_ = cuda if self.compile == "auto" else bool(self.compile)
        return SACConfig.preset(self.preset, **self.sac, precision=precision, compile=compile_)

    def koopman_config(self):
        from kfc_lite.koopman.fit import KoopmanTrainConfig

        names = {f.name for f in dataclasses.fields(KoopmanTrainConfig)}
        unknown = sorted(set(self.koopman) - names)
        if unknown:
            raise ValueError(
                f"TrainConfig.koopman has unknown field(s) {unknown}; KoopmanTrainConfig's fields are {sorted(names)}"
            )
        values = dict(seed=self.seed)
        values.update(self.koopman)
        for k in ("stop_recon_and_forward",):
            if isinstance(values.get(k), list):
                values[k] = tuple(values[k])
        return KoopmanTrainConfig(**values)

    def augmenter_kwargs(self) -> dict:
        if self.method == "cql":
            return {}
        if self.method == "s4rl":
            return {"sigma": self.noise_sigma}
        return {
            "shift_sigma": self.shift_sigma,
            "p_koopman": self.p_koopman,
            "per": self.per,
            "gauged": self.gauged,
            "noise_sigma": self.noise_sigma,
        }

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        for old in sorted(set(d) & set(REMOVED_FIELDS) - names):
            warnings.warn(f"TrainConfig.{old} is no longer a setting ({REMOVED_FIELDS[old]}): ignored", stacklevel=2)
            d = {k: v for k, v in d.items() if k != old}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {unknown}; its fields are {sorted(names)}")
        return cls(**d)

    def with_overrides(self, **kv) -> TrainConfig:
        """A copy with fields changed; SACConfig fields go to ``sac`` and ``koopman.X`` keys to ``koopman``.

        ``cfg.with_overrides(steps=10, q_lr=1e-3, **{"koopman.max_epochs": 5})``
        """
        from kfc_lite.koopman.fit import KoopmanTrainConfig
        from kfc_lite.rl.sac import SACConfig

        own = {f.name for f in dataclasses.fields(type(self))}
        sac_names = {f.name for f in dataclasses.fields(SACConfig)} - {"precision", "compile"}
        koop_names = {f.name for f in dataclasses.fields(KoopmanTrainConfig)}
        d = self.to_dict()
        for key, value in kv.items():
            prefix, _, name = key.rpartition(".")
            if prefix == "sac" or (not prefix and key in sac_names and key not in own):
                d["sac"][name] = value
            elif prefix == "koopman":
                if name not in koop_names:
                    raise ValueError(
                        f"koopman.{name}: KoopmanTrainConfig has no such field; its fields are {sorted(koop_names)}"
                    )
                d["koopman"][name] = value
            elif not prefix and key in own:
                d[key] = value
            else:
                raise ValueError(
                    f"unknown setting {key!r}: use a TrainConfig field ({', '.join(sorted(own))}), "
                    f"a SACConfig field (e.g. q_lr, bc_steps, cql_weight) or koopman.<field>"
                )
        return type(self).from_dict(d)
