"""One training loop for every method (CQL, S4RL, KFC, KFC++): a config in, a run folder out, resumable.

    from kfc_lite.train import TrainConfig, train
    result = train(TrainConfig(dataset="hopper-medium-replica", method="kfc++", steps=100_000, out="runs/hopper-kfcpp"))
    result.evals[-1]["normalized"]      # D4RL normalized score of the last evaluation

The run folder holds

* ``config.json``: the :class:`TrainConfig` and the resolved :class:`~kfc_lite.rl.sac.SACConfig`;
* ``metrics.jsonl``: one JSON object per line, ``{"kind": "train", "step": ...}`` rows (losses, Q-values, CQL
  weight, augmentation statistics, steps per second: the values of the logged step, not interval means) and
  ``{"kind": "eval", ...}`` rows (raw returns and normalized scores);
* ``checkpoint.pt``: the latest checkpoint (agent, optimisers, step, every RNG state, the batch sampler, the
  augmenter's own state: the Koopman branch draw's generator), written every ``checkpoint_every`` steps;
  ``checkpoint.prev.pt`` the one before it and ``checkpoint.sha256`` the checksums of both (:mod:`kfc_lite.files`):
  a damaged latest checkpoint is reported and the run resumes from the previous one;
* ``koopman.pt`` (KFC, KFC++): the Koopman model, pre-trained first on the same transitions (or copied from
  ``koopman_path``), then frozen; while it pre-trains, ``koopman.partial.pt`` holds its last epoch, so a stopped
  pre-training resumes from there;
* ``koopman_report.json`` (KFC, KFC++): the model's quality report (:mod:`kfc_lite.koopman.report`), also printed
  before Q-learning starts;
* ``policy.pt`` (at the end) and ``policies/step_<N>.pt`` (at every evaluation): :func:`kfc_lite.rl.load_policy`.

Resume (``resume=True``, ``kfc-lite train ... --resume``) continues from ``checkpoint.pt`` to ``steps`` (the
total). On one device with one thread count, a run stopped and resumed reaches bit-exactly the parameters of
an uninterrupted run with the same seed (tested on the CPU).

One process at a time owns a run folder, and a run that goes non-finite stops: :mod:`kfc_lite.run_folder` has
the rules. The losses are checked at every log step and the parameters before every checkpoint (where the loop
synchronises with the device anyway, so the steps in between stay free of synchronisation): a NaN or infinity
is detected at the next log or checkpoint step after it appears, and never written into a checkpoint.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import pathlib
import random
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from kfc_lite import run_folder
from kfc_lite.run_folder import RunExistsError, RunFolderError, TrainingDivergedError, note

__all__ = ["TrainConfig", "RunResult", "train", "evaluate_run", "read_metrics", "train_online_sac", "register",
           "METHODS"]

METHODS = ("cql", "s4rl", "kfc", "kfc++")
KOOPMAN_METHODS = ("kfc", "kfc++")
#: what train() does when the Koopman report's gate is triggered (kfc_lite.koopman.report)
KOOPMAN_GATES = ("warn", "error", "off")
#: fields that may change between a run and its resumption (they do not change what is computed per step)
RESUMABLE_CHANGES = ("steps", "device", "eval_every", "eval_episodes", "eval_max_steps", "checkpoint_every",
                     "log_every", "out", "download", "table_memory_gb", "koopman_gate")
#: fields of earlier versions that no longer exist: a saved config that has them loads without them, with a note
REMOVED_FIELDS = {"eig_workers": "the symmetry table replaced the look-ahead decomposition workers"}
CHECKPOINT_FORMAT = "kfc-lite-train-checkpoint"
ONLINE_CHECKPOINT_FORMAT = "kfc-lite-online-checkpoint"


def _int(name, v, minimum, allow_none=False):
    if allow_none and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"TrainConfig.{name} must be an integer >= {minimum}{' or None' if allow_none else ''}, got {v!r}")


def _num(name, v, lo=None, hi=None, lo_open=False):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        raise ValueError(f"TrainConfig.{name} must be a finite number, got {v!r}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"TrainConfig.{name} must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and v > hi:
        raise ValueError(f"TrainConfig.{name} must be <= {hi}, got {v!r}")


@dataclass
class TrainConfig:
    """Everything a training run depends on. Validated on creation; saved as ``config.json`` with the run.

    Data and task: ``dataset`` (a name such as ``hopper-medium-v2`` / ``hopper-medium-replica``, or an HDF5
    path), ``env`` (a D4RL family or gymnasium id, only needed when the dataset's name and metadata do not
    tell), ``download`` (fetch a D4RL file that is not in the cache).

    Method: ``method`` in cql, s4rl, kfc, kfc++. Augmentation (docs/paper.md, 'The symmetry augmentation'): ``noise_sigma`` is
    S4RL's noise (also KFC's fall-back branch), ``shift_sigma`` the symmetry scale (units of 3e-3 for KFC++),
    ``p_koopman`` the probability of the symmetry branch, drawn once ``per`` batch (the authors' code) or sample,
    ``gauged`` the residual form ``s + D((I+sigma)E(s)) - D(E(s))``. KFC and KFC++ read each transition's
    symmetry from a table computed once per dataset (:mod:`kfc_lite.symmetry_table`), cached beside the Koopman
    model: ``table_storage`` is the dtype of its stored bases ("float16", "float32" or "bfloat16"; the error
    each gives is in benchmarks/results/memory.md), ``table_memory_gb`` the size above which the table is
    memory-mapped from disk instead of read into memory.

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
        from kfc_lite.rl.sac import SACConfig

        if not isinstance(self.dataset, (str, os.PathLike)) or not str(self.dataset).strip():
            raise ValueError(f"TrainConfig.dataset must be a dataset name (e.g. 'hopper-medium-v2') or an HDF5 path, "
                             f"got {self.dataset!r}")
        self.dataset = os.fspath(self.dataset)
        self.method = str(self.method).strip().lower()
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {METHODS}")
        _int("steps", self.steps, 1)
        _int("seed", self.seed, 0)
        for name in ("eval_every", "eval_episodes", "checkpoint_every"):
            _int(name, getattr(self, name), 0)
        _int("log_every", self.log_every, 1)
        _int("eval_max_steps", self.eval_max_steps, 1, allow_none=True)
        if self.sampling not in ("epoch", "uniform"):
            raise ValueError(f"TrainConfig.sampling must be 'epoch' (shuffled passes, the authors' loader) or 'uniform' "
                             f"(with replacement), got {self.sampling!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"TrainConfig.precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.compile not in ("auto", True, False):
            raise ValueError(f"TrainConfig.compile must be 'auto', True or False, got {self.compile!r}")
        _num("noise_sigma", self.noise_sigma, 0.0)
        _num("shift_sigma", self.shift_sigma, 0.0)
        _num("p_koopman", self.p_koopman, 0.0, 1.0)
        if self.per not in ("batch", "sample"):
            raise ValueError(f"TrainConfig.per must be 'batch' (the authors' code) or 'sample', got {self.per!r}")
        from kfc_lite.symmetry_table import STORAGE_DTYPES

        if self.table_storage not in STORAGE_DTYPES:
            raise ValueError(f"TrainConfig.table_storage must be one of {sorted(STORAGE_DTYPES)}, got "
                             f"{self.table_storage!r}")
        _num("table_memory_gb", self.table_memory_gb, 0.0)
        if not isinstance(self.sac, dict) or not isinstance(self.koopman, dict):
            raise ValueError("TrainConfig.sac and TrainConfig.koopman are dicts of field overrides, e.g. sac={'q_lr': 1e-4}")
        for key in ("precision", "compile"):
            if key in self.sac:
                raise ValueError(f"set {key} on TrainConfig (TrainConfig.{key}), not inside TrainConfig.sac")
        self.sac_config("cpu")  # validates the preset and every override now, with SACConfig's messages
        if self.koopman_path is not None and self.method not in KOOPMAN_METHODS:
            raise ValueError(f"koopman_path is only used by kfc and kfc++, not by {self.method!r}; drop it or change the method")
        if self.koopman_path is not None and self.koopman:
            raise ValueError("give either koopman_path (a pre-trained model, used as is) or koopman (settings to "
                             "pre-train one), not both")
        self.koopman_config()  # validates the Koopman overrides
        if self.koopman_gate not in KOOPMAN_GATES:
            raise ValueError(f"TrainConfig.koopman_gate must be one of {KOOPMAN_GATES} (what to do when the Koopman "
                             f"model's reconstruction offset dominates the plain augmentation), got {self.koopman_gate!r}")
        if self.out is None:
            stem = pathlib.Path(self.dataset).stem if os.sep in self.dataset or self.dataset.endswith((".hdf5", ".h5")) \
                else self.dataset
            self.out = os.path.join("runs", f"{stem}-{self.method}-seed{self.seed}")
        self.out = os.fspath(self.out)
        _ = SACConfig  # keep the import visible to readers: sac_config() builds one

    # -- derived configs --------------------------------------------------------------------------------
    def sac_config(self, device) -> "SACConfig":
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
            raise ValueError(f"TrainConfig.koopman has unknown field(s) {unknown}; KoopmanTrainConfig's fields are {sorted(names)}")
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
        return {"shift_sigma": self.shift_sigma, "p_koopman": self.p_koopman, "per": self.per, "gauged": self.gauged,
                "noise_sigma": self.noise_sigma}

    # -- (de)serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        for old in sorted(set(d) & set(REMOVED_FIELDS) - names):
            warnings.warn(f"TrainConfig.{old} is no longer a setting ({REMOVED_FIELDS[old]}): ignored", stacklevel=2)
            d = {k: v for k, v in d.items() if k != old}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainConfig has no field(s) {unknown}; its fields are {sorted(names)}")
        return cls(**d)

    def with_overrides(self, **kv) -> "TrainConfig":
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
                    raise ValueError(f"koopman.{name}: KoopmanTrainConfig has no such field; its fields are {sorted(koop_names)}")
                d["koopman"][name] = value
            elif not prefix and key in own:
                d[key] = value
            else:
                raise ValueError(f"unknown setting {key!r}: use a TrainConfig field ({', '.join(sorted(own))}), "
                                 f"a SACConfig field (e.g. q_lr, bc_steps, cql_weight) or koopman.<field>")
        return type(self).from_dict(d)


@dataclass
class RunResult:
    """What :func:`train` returns: the run folder, its config, metrics and evaluations, and the trained agent."""

    run_dir: pathlib.Path
    config: TrainConfig
    metrics: list  #: the ``"train"`` rows of metrics.jsonl
    evals: list  #: the ``"eval"`` rows
    policy_path: pathlib.Path
    steps_per_second: float  #: mean over this call's steps, evaluation excluded
    agent: object = None
    koopman_history: dict | None = None

    @property
    def final_normalized(self) -> float | None:
        return self.evals[-1]["normalized"] if self.evals else None

    @property
    def final_return(self) -> float | None:
        return self.evals[-1]["return"] if self.evals else None

    def __repr__(self) -> str:
        score = f", final normalized score {self.final_normalized:.1f}" if self.evals else ""
        method = self.config.method if self.config is not None else "online-sac"
        return f"RunResult({str(self.run_dir)!r}, {method}, {len(self.metrics)} metric rows{score})"


# -- helpers ---------------------------------------------------------------------------------------------------
read_metrics = run_folder.read_metrics


def _json_line(row: dict) -> str:
    """One strict-JSON line: NaN and infinities (e.g. a statistic with no samples yet) become null."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
    return json.dumps(clean) + "\n"


def _write_json_atomic(obj, path: pathlib.Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _rng_state(device) -> dict:
    import torch

    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _diverged(step: int, what: str, run_dir: pathlib.Path, last_checkpoint: int | None) -> TrainingDivergedError:
    """The error of a run that went non-finite: where, what, what was kept, and what to do."""
    kept = (f"checkpoint.pt (step {last_checkpoint}) is the last good checkpoint and was not overwritten"
            if last_checkpoint is not None else "no checkpoint had been written")
    return TrainingDivergedError(
        f"training diverged at step {step}: {what}. Nothing after that was saved; in {run_dir}, {kept}. Resuming "
        "would repeat the same steps: lower the learning rates (e.g. --set q_lr=1e-4 --set policy_lr=3e-5) or check "
        "the data's scale, and start again in another --out folder")


def _checkpoint_payload(agent, sampler, step: int, device, extra: dict | None = None) -> dict:
    return {"format": CHECKPOINT_FORMAT, "step": step, "agent": agent.state_dict(), "sampler": sampler.state_dict(),
            "rng": _rng_state(device), **(extra or {})}


def _load_transitions(config: TrainConfig, progress: bool):
    """The dataset as D4RL Q-learning transitions, the environment to evaluate in, and its dimensions, checked."""
    from kfc_lite import data as kdata
    from kfc_lite import envs

    raw = kdata.load(config.dataset, download=config.download, progress=progress)
    if config.env is not None:
        env_name = config.env
        envs.env_family(env_name)  # a clear error for a name we cannot map
    else:
        try:
            env_name = raw.get("metadata/d4rl_env") or envs.env_family(raw)
            envs.env_family(env_name)
        except (ValueError, KeyError):
            raise ValueError(f"cannot tell which environment {config.dataset!r} comes from (no usable metadata): "
                             "pass env, e.g. --env hopper or --env Hopper-v4") from None
    q = kdata.qlearning_dataset(raw)
    env = envs.make_env(env_name)
    try:
        ds, da = env.observation_space.shape[0], env.action_space.shape[0]
        low, high = env.action_space.low, env.action_space.high
    finally:
        env.close()
    if q["observations"].shape[1] != ds or q["actions"].shape[1] != da:
        raise ValueError(f"the dataset {config.dataset!r} has states of dimension {q['observations'].shape[1]} and "
                         f"actions of dimension {q['actions'].shape[1]}, but {envs.gym_id(env_name)} has {ds} and {da}: "
                         "is env right? (pass the environment the data was collected in)")
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        raise ValueError(f"{envs.gym_id(env_name)} has actions in [{low.min()}, {high.max()}]; this agent's tanh policy "
                         "acts in [-1, 1] (all D4RL MuJoCo tasks do)")
    amax = float(np.abs(q["actions"]).max())
    if amax > 1.0 + 1e-5:
        raise ValueError(f"the dataset's actions reach |a| = {amax:.3g} > 1, outside the action box [-1, 1]: "
                         "the data do not fit this environment, or need rescaling before training")
    return q, env_name, ds, da


def _koopman_model(config: TrainConfig, run_dir: pathlib.Path, q: dict, ds: int, da: int, device, progress: bool):
    """The frozen Koopman model of a KFC run: the run's own file (resume), a given file, or pre-trained now (from
    the run's pre-training checkpoint ``koopman.partial.pt`` when an earlier start was stopped during it)."""
    import shutil

    from kfc_lite.files import remove_verified
    from kfc_lite.koopman import fit_koopman, load_koopman, save_koopman

    path, history = run_dir / "koopman.pt", None
    if not path.is_file():
        if config.koopman_path is not None:
            load_koopman(config.koopman_path, state_dim=ds, action_dim=da)  # check it fits before copying
            shutil.copyfile(config.koopman_path, path)
        else:
            partial = run_dir / "koopman.partial.pt"
            model, history = fit_koopman(q, config.koopman_config(), device=device, progress=progress,
                                         checkpoint=partial)
            save_koopman(model, path, history=history, dataset=config.dataset)
            remove_verified(partial)
    model = load_koopman(path, map_location=device, state_dim=ds, action_dim=da)
    model.requires_grad_(False)
    return model.eval(), history


def _symmetry_table(config: TrainConfig, augmenter, model, q: dict, run_dir: pathlib.Path, device, progress: bool):
    """The dataset's symmetry table, cached beside the Koopman model the run was given (so runs that share a model
    share its table) or in the run folder; its build time and size are printed and go to result.json."""
    from kfc_lite.symmetry_table import symmetry_table

    cache_dir = pathlib.Path(config.koopman_path).parent if config.koopman_path is not None else run_dir
    settings = dataclasses.replace(augmenter.table_settings, storage=config.table_storage)
    table = symmetry_table(model, q, settings, cache_dir, memory_budget_gb=config.table_memory_gb,
                           progress=progress)
    how = (f"built in {table.build_seconds:.1f} s" if table.build_seconds is not None else "loaded from the cache")
    print(f"symmetry table: {len(table):,} rows, {table.nbytes / 2**20:.1f} MiB ({table.bytes_per_row} bytes a row, "
          f"{'memory-mapped' if table.mapped else 'in memory'}), {how}; guard fall-back rate "
          f"{table.fallback_rate:.2%} ({table.path})", flush=True)
    return table.to(device)


def _koopman_report(config: TrainConfig, augmenter, model, q: dict, run_dir: pathlib.Path) -> dict:
    """The Koopman model's quality report: saved as koopman_report.json, printed, and its gate applied.

    Runs before the symmetry table and the agent, so that koopman_gate="error" stops the run before either.
    """
    from kfc_lite.koopman.report import format_report, gate_message, jsonable, koopman_report

    report = koopman_report(model, q, augmenter, seed=config.seed)
    _write_json_atomic(jsonable(report), run_dir / "koopman_report.json")
    print(format_report(report), flush=True)
    message = gate_message(report)
    if message is None or config.koopman_gate == "off":
        return report
    if config.koopman_path is not None:
        message += f" (The model comes from koopman_path={config.koopman_path}: train that file longer.)"
    if config.koopman_gate == "error":
        raise ValueError(f"{message} No symmetry table was built and no agent trained; {run_dir} keeps the Koopman "
                         "model (koopman.pt) and koopman_report.json: start again in another out folder.")
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    return report


def _evaluate(agent, env_name, config: TrainConfig, step: int) -> dict:
    from kfc_lite.envs import evaluate

    res = evaluate(agent, env_name, episodes=config.eval_episodes, seed=config.seed,
                   max_episode_steps=config.eval_max_steps)
    return {"kind": "eval", "step": step, "return": res["mean_return"], "normalized": res["mean_normalized"],
            "returns": [float(x) for x in res["returns"]], "normalized_scores": [float(x) for x in res["normalized"]],
            "lengths": [int(x) for x in res["lengths"]]}


# -- the loop --------------------------------------------------------------------------------------------------
def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Train ``config.method`` on ``config.dataset`` for ``config.steps`` gradient steps; see the module docstring.

    ``resume=True`` continues the run in ``config.out`` from its last checkpoint (its config must match, except
    for the fields in ``RESUMABLE_CHANGES``, such as ``steps``). Without it, a folder that already holds a run
    is an error rather than being overwritten.
    """
    from kfc_lite.settings import resolve_device

    if not isinstance(config, TrainConfig):
        raise TypeError(f"train takes a TrainConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    run_dir = pathlib.Path(config.out)
    with run_folder.owned(run_dir, create=not resume):
        try:
            return _train(config, run_dir, device, resume, progress)
        except OSError as exc:
            if isinstance(exc, (FileNotFoundError, FileExistsError, ValueError)):
                raise  # already a sentence about the input
            raise _write_failed(exc, run_dir) from exc


def _write_failed(exc: OSError, run_dir: pathlib.Path) -> RuntimeError:
    """A write the system refused (a full disk, a lost permission), as a sentence with the way on."""
    return RuntimeError(f"could not write {exc.filename or 'to ' + str(run_dir)}: {exc.strerror or exc}. The run "
                        f"stopped; its last checkpoint is intact: fix the cause (free disk space), then continue with "
                        f"kfc-lite train --out {run_dir} --resume")


def _check_resume(config: TrainConfig, run_dir: pathlib.Path):
    """The checkpoint a resumed run starts from (None: from step 0), after refusing what cannot be honoured."""
    saved = run_folder.read_config(run_dir)["train"]
    mine = config.to_dict()
    diff = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k])
    if diff:
        raise RunFolderError(f"the run in {run_dir} was started with a different config ({', '.join(diff)}: "
                             f"{ {k: saved.get(k) for k in diff} } there, { {k: mine[k] for k in diff} } now); "
                             f"only {', '.join(RESUMABLE_CHANGES)} may change on resume. To train with the new "
                             "settings, start a run in another --out folder")
    found = run_folder.load_checkpoint(run_dir, CHECKPOINT_FORMAT)
    if found is None:
        run_folder.check_restart(run_dir)
        return None
    run_folder.check_metrics(run_dir / "metrics.jsonl")
    at = int(found.obj["step"])
    if config.steps < at:
        raise RunFolderError(f"the run in {run_dir} is at step {at} ({found.path.name}) and --steps {config.steps} is "
                             f"below it: a run cannot go back. Give the new total (--steps {at} or more); the "
                             "policies of earlier evaluations are in its policies/ folder")
    return found.obj


def _train(config: TrainConfig, run_dir: pathlib.Path, device, resume: bool, progress: bool) -> RunResult:
    """train() in a folder this process owns."""
    import torch
    from tqdm.auto import tqdm

    from kfc_lite.files import remove_temp_files, save_verified
    from kfc_lite.rl.augment import KoopmanAugmenter, make_augmenter
    from kfc_lite.rl.policy import save_policy
    from kfc_lite.rl.replay import TransitionSampler
    from kfc_lite.rl.sac import SACCQL
    from kfc_lite.settings import release_cpu_memory, seed_everything

    ckpt_path, metrics_path = run_dir / run_folder.CHECKPOINT_NAME, run_dir / "metrics.jsonl"
    # the folder is ours: a temporary file in it is what a killed write left
    removed = remove_temp_files(run_dir) + remove_temp_files(run_dir / "policies")
    if removed:
        note(f"removed {len(removed)} temporary file(s) left in {run_dir} by a stopped write: {', '.join(removed)}")
    if resume:
        ckpt = _check_resume(config, run_dir)
    else:
        run_folder.check_fresh(run_dir)
        ckpt = None

    seed_everything(config.seed)
    q, env_name, ds, da = _load_transitions(config, progress)
    sac_config = config.sac_config(device)
    _write_json_atomic({"train": config.to_dict(), "sac": sac_config.to_dict(), "env": env_name,
                        "state_dim": ds, "action_dim": da, "transitions": int(len(q["observations"])),
                        "device": str(device), "torch": torch.__version__}, run_dir / "config.json")

    model, koopman_history = None, None
    if config.method in KOOPMAN_METHODS:
        model, koopman_history = _koopman_model(config, run_dir, q, ds, da, device, progress)
    augmenter = make_augmenter(config.method, model, **config.augmenter_kwargs())
    table = None
    if isinstance(augmenter, KoopmanAugmenter):
        _koopman_report(config, augmenter, model, q, run_dir)
        table = _symmetry_table(config, augmenter, model, q, run_dir, device, progress)
        augmenter.use_table(table)
    seed_everything(config.seed)  # the agent starts the same whether the Koopman model was trained or loaded
    agent = SACCQL(ds, da, sac_config, device)
    sampler = TransitionSampler(q, sac_config.batch_size, device, seed=config.seed, mode=config.sampling)

    start = 0
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        sampler.load_state_dict(ckpt["sampler"])
        if "augmenter" in ckpt:
            augmenter.load_state_dict(ckpt["augmenter"])
        elif isinstance(augmenter, KoopmanAugmenter):
            warnings.warn(f"{ckpt_path} was written before checkpoints held the Koopman augmenter's branch draw: the "
                          "run goes on with that draw's stream from its seed, so it will not repeat an uninterrupted "
                          "run", RuntimeWarning, stacklevel=3)
        _set_rng_state(ckpt["rng"], device)
        start = int(ckpt["step"])
        run_folder.repair_metrics(metrics_path, start)
    last_checkpoint = start if ckpt is not None else None

    def log(row: dict) -> None:
        with open(metrics_path, "a") as f:
            f.write(_json_line(row))

    bar = tqdm(total=config.steps, initial=start, desc=f"{config.method} on {pathlib.Path(config.dataset).name}",
               unit="step", disable=not progress, dynamic_ncols=True)
    postfix: dict = {}
    # steps per second count training only: time spent evaluating and checkpointing is "paused" time
    t_begin = t_log = time.perf_counter()
    paused = total_paused = 0.0
    steps_since_log, evaluated_at = 0, -1
    try:
        for step in range(start + 1, config.steps + 1):
            want = step % config.log_every == 0 or step == config.steps
            batch = sampler.sample()
            augmented = augmenter(batch)
            metrics = agent.update(batch, augmented, metrics=want)  # metrics=False: no device sync on most steps
            steps_since_log += 1
            if want:
                now = time.perf_counter()
                sps = steps_since_log / max(now - t_log - paused, 1e-9)
                t_log, paused, steps_since_log = now, 0.0, 0
                metrics.update({f"aug_{k}": float(v) for k, v in augmenter.stats.items()})
                metrics.update(kind="train", step=step, steps_per_second=sps)
                bad = run_folder.nonfinite_metrics(metrics)
                if bad:
                    raise _diverged(step, ", ".join(f"{k} = {v}" for k, v in bad.items()), run_dir, last_checkpoint)
                log(metrics)
                augmenter.reset_stats()  # augmentation statistics per logging interval
                postfix.update(sps=f"{sps:.1f}", q=f"{metrics['q_data']:.1f}")
                bar.set_postfix(postfix, refresh=False)
            do_eval = config.eval_episodes > 0 and (step == config.steps or bool(config.eval_every and step % config.eval_every == 0))
            do_ckpt = step == config.steps or bool(config.checkpoint_every and step % config.checkpoint_every == 0)
            if do_eval or do_ckpt:
                t0 = time.perf_counter()
                # no policy or checkpoint is written from parameters that are not finite
                bad_tensor = run_folder.first_nonfinite(agent.state_dict(), "agent")
                if bad_tensor is not None:
                    raise _diverged(step, f"{bad_tensor} holds NaN or infinite values (the losses logged before "
                                    "were finite)", run_dir, last_checkpoint)
                if do_eval:
                    row = _evaluate(agent, env_name, config, step)
                    log(row)
                    evaluated_at = step
                    save_policy(agent, run_dir / "policies" / f"step_{step}.pt",
                                meta={"step": step, "method": config.method, "dataset": config.dataset,
                                      "env": env_name, "normalized": row["normalized"], "return": row["return"]})
                    postfix["score"] = f"{row['normalized']:.1f}"
                    bar.set_postfix(postfix, refresh=False)
                if do_ckpt:
                    payload = _checkpoint_payload(agent, sampler, step, device,
                                                  extra={"augmenter": augmenter.state_dict()})
                    save_verified(payload, ckpt_path, label=f"step {step}")
                    last_checkpoint = step
                dt = time.perf_counter() - t0
                paused += dt
                total_paused += dt
            bar.update(1)
    finally:
        bar.close()
        release_cpu_memory()  # what the steps' temporaries kept in the C heap (kfc_lite.settings)
    train_time = time.perf_counter() - t_begin - total_paused

    final_meta = {"step": agent.step, "method": config.method, "dataset": config.dataset, "env": env_name,
                  "seed": config.seed}
    rows = read_metrics(run_dir) if metrics_path.is_file() else []
    evals = [r for r in rows if r["kind"] == "eval"]
    if evals and evals[-1]["step"] == agent.step:
        final_meta.update(normalized=evals[-1]["normalized"], **{"return": evals[-1]["return"]})
    policy_path = save_policy(agent, run_dir / "policy.pt", meta=final_meta)
    done = config.steps - start
    result = RunResult(run_dir=run_dir, config=config, metrics=[r for r in rows if r["kind"] == "train"], evals=evals,
                       policy_path=policy_path, steps_per_second=done / train_time if train_time > 0 else float("nan"),
                       agent=agent, koopman_history=koopman_history)
    _write_json_atomic({"step": agent.step, "final_return": result.final_return,
                        "final_normalized": result.final_normalized, "steps_per_second": result.steps_per_second,
                        "evaluated_at": evaluated_at, "torch_threads": torch.get_num_threads(),
                        "symmetry_table": table.summary() if table is not None else None},
                       run_dir / "result.json")
    return result


def evaluate_run(run_dir, episodes: int = 10, env: str | None = None, seed: int = 0,
                 max_episode_steps: int | None = None) -> dict:
    """Evaluate a run's final policy (``run_dir/policy.pt``) in its environment; D4RL normalized scores."""
    from kfc_lite.envs import evaluate
    from kfc_lite.rl.policy import load_policy

    run_dir = pathlib.Path(run_dir)
    cfg_path = run_dir / "config.json"
    if env is None:
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{run_dir} has no config.json; pass env= (e.g. 'hopper') to evaluate its policy")
        env = run_folder.read_config(run_dir, need="env")["env"]
    policy = load_policy(run_dir / "policy.pt")
    res = evaluate(policy, env, episodes=episodes, seed=seed, max_episode_steps=max_episode_steps)
    return {"run": str(run_dir), "env": env, "episodes": episodes, "mean_return": res["mean_return"],
            "mean_normalized": res["mean_normalized"], "returns": [float(x) for x in res["returns"]],
            "normalized": [float(x) for x in res["normalized"]]}


# -- online SAC (behaviour policies) --------------------------------------------------------------------------
def train_online_sac(env_name: str, steps: int, seed: int = 0, out=None, config=None, *, start_steps: int = 10_000,
                     buffer_size: int = 1_000_000, eval_every: int = 10_000, eval_episodes: int = 5,
                     checkpoint_every: int = 50_000, max_episode_steps: int | None = None, device="auto",
                     progress: bool = True, resume: bool = False) -> RunResult:
    """Plain online SAC in a gymnasium environment, on the same networks as the offline agent.

    The agent is :class:`SACCQL` with the ``online-sac`` preset (no penalty, no warm-up, auto-tuned entropy)
    unless ``config`` says otherwise. The first ``start_steps`` actions are uniform random; then one gradient
    step per environment step. Every evaluation saves ``policies/step_<N>.pt`` with its score, so behaviour
    policies of a chosen quality ("medium": about a third of expert) can be picked afterwards.

    Checkpoints hold the agent, the replay buffer and the RNG states; a resumed run starts a fresh episode
    (MuJoCo's mid-episode state is not saved), so unlike offline training it is not bit-exact.
    """
    from kfc_lite.rl.sac import SACConfig
    from kfc_lite.settings import resolve_device

    _int("steps", steps, 1)
    _int("start_steps", start_steps, 0)
    config = SACConfig.preset("online-sac") if config is None else config
    if config.use_cql:
        raise ValueError("train_online_sac runs plain SAC: pass a config with online=True or cql_weight=0 "
                         "(SACConfig.preset('online-sac'))")
    device = resolve_device(device)
    run_dir = pathlib.Path(out if out is not None else os.path.join("runs", f"online-sac-{env_name}-seed{seed}"))
    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    with run_folder.owned(run_dir, create=True):
        if not resume and ckpt_path.exists():
            raise RunExistsError(f"{run_dir} already holds a run: pass resume=True or another out folder")
        found = run_folder.load_checkpoint(run_dir, ONLINE_CHECKPOINT_FORMAT) if resume else None
        return _train_online_sac(env_name, steps, seed, run_dir, config, device, found, start_steps=start_steps,
                                 buffer_size=buffer_size, eval_every=eval_every, eval_episodes=eval_episodes,
                                 checkpoint_every=checkpoint_every, max_episode_steps=max_episode_steps,
                                 progress=progress)


def _train_online_sac(env_name, steps, seed, run_dir, config, device, found, *, start_steps, buffer_size, eval_every,
                      eval_episodes, checkpoint_every, max_episode_steps, progress) -> RunResult:
    """train_online_sac() in a folder this process owns; ``found`` is the checkpoint to resume from (or None)."""
    from tqdm.auto import tqdm

    from kfc_lite.envs import make_env
    from kfc_lite.files import save_verified
    from kfc_lite.rl.policy import save_policy
    from kfc_lite.rl.replay import ReplayBuffer
    from kfc_lite.rl.sac import SACCQL
    from kfc_lite.settings import release_cpu_memory, seed_everything

    ckpt_path, metrics_path = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    seed_everything(seed)
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    env = make_env(env_name, seed=seed, **kwargs)
    ds, da = env.observation_space.shape[0], env.action_space.shape[0]
    if not (np.allclose(env.action_space.low, -1) and np.allclose(env.action_space.high, 1)):
        raise ValueError(f"{env_name}: the tanh policy acts in [-1, 1], this environment's action box differs")
    agent = SACCQL(ds, da, config, device)
    buffer = ReplayBuffer(ds, da, min(buffer_size, steps), device, seed=seed)
    start = 0
    if found is not None:
        ckpt = found.obj
        agent.load_state_dict(ckpt["agent"])
        buffer.load_state_dict(ckpt["buffer"])
        _set_rng_state(ckpt["rng"], device)
        start = int(ckpt["step"])
        run_folder.repair_metrics(metrics_path, start)
    _write_json_atomic({"online": True, "env": env_name, "steps": steps, "seed": seed, "start_steps": start_steps,
                        "sac": config.to_dict(), "state_dim": ds, "action_dim": da}, run_dir / "config.json")
    act_rng = np.random.default_rng(seed + start)
    obs, _ = env.reset(seed=seed + start)
    ep_return, evals, rows = 0.0, [], []
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, desc=f"online SAC on {env_name}", unit="step", disable=not progress)
    try:
        for step in range(start + 1, steps + 1):
            if step <= start_steps:
                action = act_rng.uniform(-1, 1, size=da).astype(np.float32)
            else:
                action = agent.act(obs, deterministic=False)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)  # a time-out is not a terminal: keep bootstrapping
            ep_return += float(reward)
            obs = next_obs
            if terminated or truncated:
                obs, _ = env.reset()
                bar.set_postfix(episode_return=f"{ep_return:.0f}", refresh=False)
                ep_return = 0.0
            if step > start_steps:
                m = agent.update(buffer.sample(config.batch_size), metrics=step % 1000 == 0)
                if m:
                    m.update(kind="train", step=step)
                    rows.append(m)
                    with open(metrics_path, "a") as f:
                        f.write(_json_line(m))
            if eval_episodes and (step == steps or (eval_every and step % eval_every == 0)):
                from kfc_lite.envs import evaluate

                res = evaluate(agent, env_name, episodes=eval_episodes, seed=seed + 1000,
                               max_episode_steps=max_episode_steps)
                row = {"kind": "eval", "step": step, "return": res["mean_return"], "normalized": res["mean_normalized"],
                       "returns": [float(x) for x in res["returns"]]}
                evals.append(row)
                with open(metrics_path, "a") as f:
                    f.write(_json_line(row))
                save_policy(agent, run_dir / "policies" / f"step_{step}.pt",
                            meta={"step": step, "env": env_name, "return": row["return"], "normalized": row["normalized"],
                                  "algorithm": "online SAC"})
            if step == steps or (checkpoint_every and step % checkpoint_every == 0):
                save_verified({"format": ONLINE_CHECKPOINT_FORMAT, "step": step, "agent": agent.state_dict(),
                               "buffer": buffer.state_dict(), "rng": _rng_state(device)}, ckpt_path,
                              label=f"step {step}")
            bar.update(1)
    finally:
        bar.close()
        env.close()
        release_cpu_memory()
    elapsed = time.perf_counter() - t0
    policy_path = save_policy(agent, run_dir / "policy.pt", meta={"step": steps, "env": env_name, "algorithm": "online SAC"})
    return RunResult(run_dir=run_dir, config=None, metrics=rows, evals=evals, policy_path=policy_path,
                     steps_per_second=(steps - start) / elapsed, agent=agent)


# -- command line ----------------------------------------------------------------------------------------------
def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _parse_sets(items) -> dict:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes key=value (e.g. --set q_lr=1e-4 --set koopman.max_epochs=50), got {item!r}")
        out[key.strip()] = _parse_value(value)
    return out


def _cmd_train(args: argparse.Namespace) -> int:
    run_dir = pathlib.Path(args.out)
    given = {k: getattr(args, k) for k in ("dataset", "method", "env", "seed", "steps", "device")
             if getattr(args, k) is not None}
    sets = _parse_sets(args.set)
    if "out" in sets:
        raise ValueError(f"--set out={sets['out']}: the run folder is given by --out (here {run_dir}), not by --set")
    twice = sorted(set(given) & set(sets))
    if twice:
        raise ValueError("given twice: " + ", ".join(f"--{k} {given[k]} and --set {k}={sets[k]}" for k in twice)
                         + "; give each setting once")
    if args.resume:
        # the saved config, read while holding the folder, with whatever was given again; train() refuses changes
        # other than steps, device, ...
        with run_folder.owned(run_dir, create=False):
            saved = run_folder.read_config(run_dir)["train"]
            config = TrainConfig.from_dict(saved).with_overrides(**given, out=str(run_dir), **sets)
            result = train(config, resume=True, progress=not args.no_progress)
    else:
        if "dataset" not in given:
            raise ValueError("--dataset is required (a name such as hopper-medium-v2, or an HDF5 path)")
        config = TrainConfig(dataset=given.pop("dataset"), out=str(run_dir)).with_overrides(**given, **sets)
        result = train(config, resume=False, progress=not args.no_progress)
    summary = {"run": str(result.run_dir), "steps": result.agent.step, "final_return": result.final_return,
               "final_normalized": result.final_normalized, "steps_per_second": result.steps_per_second}
    print(json.dumps(summary))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    res = evaluate_run(args.run_dir, episodes=args.episodes, env=args.env, seed=args.seed,
                       max_episode_steps=args.max_episode_steps)
    print(json.dumps(res))
    return 0


def _cmd_train_online(args: argparse.Namespace) -> int:
    from kfc_lite.rl.sac import SACConfig

    config = SACConfig.preset("online-sac", **_parse_sets(args.set))
    result = train_online_sac(args.env, args.steps, seed=args.seed, out=args.out, config=config,
                              start_steps=args.start_steps, device=args.device, resume=args.resume,
                              progress=not args.no_progress)
    print(json.dumps({"run": str(result.run_dir), "steps_per_second": result.steps_per_second,
                      "final_return": result.evals[-1]["return"] if result.evals else None}))
    return 0


def register(subparsers) -> None:
    """Add ``kfc-lite train``, ``kfc-lite eval`` and ``kfc-lite train-online``."""
    p = subparsers.add_parser("train", help="train CQL / S4RL / KFC / KFC++ on a dataset (resumable run folder)",
                              description="Train an offline RL agent; writes config.json, metrics.jsonl, checkpoint.pt, "
                                          "policy.pt (and koopman.pt) under --out.")
    p.add_argument("--dataset", help="dataset name (hopper-medium-v2, hopper-medium-replica) or HDF5 path")
    p.add_argument("--method", default=None, choices=METHODS, help="default kfc++")
    p.add_argument("--steps", type=int, default=None, help="total gradient steps (default 1,000,000; on --resume the new total)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--env", default=None, help="D4RL family or gymnasium id, when the dataset does not say")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any TrainConfig or SACConfig field, or koopman.<field>: --set q_lr=1e-4 --set eval_every=10000")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    e = subparsers.add_parser("eval", help="evaluate a run's policy: raw return and D4RL normalized score")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, default=10)
    e.add_argument("--env", default=None, help="override the run's environment")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--max-episode-steps", type=int, default=None)
    e.set_defaults(func=_cmd_eval)

    o = subparsers.add_parser("train-online", help="online SAC in a gymnasium environment (behaviour policies)")
    o.add_argument("env", help="D4RL family or gymnasium id, e.g. hopper or Hopper-v4")
    o.add_argument("--steps", type=int, required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--seed", type=int, default=0)
    o.add_argument("--start-steps", type=int, default=10_000)
    o.add_argument("--device", default="auto")
    o.add_argument("--resume", action="store_true")
    o.add_argument("--set", action="append", metavar="KEY=VALUE", help="SACConfig fields")
    o.add_argument("--no-progress", action="store_true")
    o.set_defaults(func=_cmd_train_online)
