"""The offline training loop, one for every method (CQL, S4RL, KFC, KFC++): a config in, a run folder out, resumable.

    from kfc_lite.train import TrainConfig, train
    result = train(TrainConfig(dataset="hopper-medium-replica", method="kfc++", steps=100_000, out="runs/hopper-kfcpp"))
    result.evals[-1]["normalized"]      # D4RL normalized score of the last evaluation

The run folder holds

* ``config.json``: the :class:`~kfc_lite.train.config.TrainConfig` and the agent's
  :class:`~kfc_lite.rl.config.SACConfig` as resolved for the device;
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

One process at a time owns a run folder, and a run that goes non-finite stops: :mod:`kfc_lite.train.run_folder` has
the rules. The losses are checked at every log step and the parameters before every checkpoint (where the loop
synchronises with the device anyway, so the steps in between stay free of synchronisation): a NaN or infinity
is detected at the next log or checkpoint step after it appears, and never written into a checkpoint.
"""

from __future__ import annotations

import pathlib
import time
import warnings
from dataclasses import dataclass

from kfc_lite.train import prepare, run_folder
from kfc_lite.train.config import KOOPMAN_METHODS, RESUMABLE_CHANGES, TrainConfig
from kfc_lite.train.records import append_metrics, rng_state, set_rng_state, write_json_atomic
from kfc_lite.train.result import RunResult
from kfc_lite.train.run_folder import RunFolderError, diverged_error, note, read_metrics

__all__ = ["train", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "kfc-lite-train-checkpoint"


def _evaluate(agent, env_name, config: TrainConfig, step: int) -> dict:
    from kfc_lite.envs import evaluate

    res = evaluate(
        agent, env_name, episodes=config.eval_episodes, seed=config.seed, max_episode_steps=config.eval_max_steps
    )
    return {
        "kind": "eval",
        "step": step,
        "return": res["mean_return"],
        "normalized": res["mean_normalized"],
        "returns": [float(x) for x in res["returns"]],
        "normalized_scores": [float(x) for x in res["normalized"]],
        "lengths": [int(x) for x in res["lengths"]],
    }


def _checkpoint_payload(agent, sampler, step: int, device, extra: dict | None = None) -> dict:
    return {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "agent": agent.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": rng_state(device),
        **(extra or {}),
    }


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> RunResult:
    """Train ``config.method`` on ``config.dataset`` for ``config.steps`` gradient steps; see the module docstring.

    ``resume=True`` continues the run in ``config.out`` from its last checkpoint (its config must match, except
    for the fields in ``RESUMABLE_CHANGES``, such as ``steps``). Without it, a folder that already holds a run
    is an error rather than being overwritten.
    """
    from kfc_lite.settings import resolve_device, tune_cpu_allocator

    if not isinstance(config, TrainConfig):
        raise TypeError(f"train takes a TrainConfig, got {type(config).__name__}")
    device = resolve_device(config.device)
    tune_cpu_allocator()  # a training run's step temporaries stay in the heap (no page faults each step)
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
    return RuntimeError(
        f"could not write {exc.filename or 'to ' + str(run_dir)}: {exc.strerror or exc}. The run "
        f"stopped; its last checkpoint is intact: fix the cause (free disk space), then continue with "
        f"kfc-lite train --out {run_dir} --resume"
    )


def _flat(d: dict, prefix: str = "") -> dict:
    """``{"sac": {"q_lr": 1}}`` as ``{"sac.q_lr": 1}``: the nested configs compared, and named, field by field."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _check_resume(config: TrainConfig, run_dir: pathlib.Path):
    """The checkpoint a resumed run starts from (None: from step 0), after refusing what cannot be honoured."""
    # the saved config read as a TrainConfig first, so that one written in an earlier layout compares field by field
    saved = _flat(TrainConfig.from_dict(run_folder.read_config(run_dir)["train"]).to_dict())
    mine = _flat(config.to_dict())
    diff = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k) != mine[k])
    if diff:
        raise RunFolderError(
            f"the run in {run_dir} was started with a different config ({', '.join(diff)}: "
            f"{ {k: saved.get(k) for k in diff} } there, { {k: mine[k] for k in diff} } now); "
            f"only {', '.join(RESUMABLE_CHANGES)} may change on resume. To train with the new "
            "settings, start a run in another --out folder"
        )
    found = run_folder.load_checkpoint(run_dir, CHECKPOINT_FORMAT)
    if found is None:
        run_folder.check_restart(run_dir)
        return None
    run_folder.check_metrics(run_dir / "metrics.jsonl")
    at = int(found.obj["step"])
    if config.steps < at:
        raise RunFolderError(
            f"the run in {run_dir} is at step {at} ({found.path.name}) and --steps {config.steps} is "
            f"below it: a run cannot go back. Give the new total (--steps {at} or more); the "
            "policies of earlier evaluations are in its policies/ folder"
        )
    return found.obj


@dataclass
class _Run:
    """What one run trains with, built by :func:`_build` and used by :func:`_loop` and :func:`_finish`."""

    agent: object
    sampler: object
    augmenter: object
    table: object  #: the symmetry table (KFC, KFC++), else None
    env_name: str
    koopman_history: dict | None
    start: int  #: the step the run (re)starts after
    last_checkpoint: int | None  #: the step of the latest checkpoint, for the divergence message


def _train(config: TrainConfig, run_dir: pathlib.Path, device, resume: bool, progress: bool) -> RunResult:
    """train() in a folder this process owns: build what the run needs, run the loop, write the result."""
    from kfc_lite.files import remove_temp_files

    # the folder is ours: a temporary file in it is what a killed write left
    removed = remove_temp_files(run_dir) + remove_temp_files(run_dir / "policies")
    if removed:
        note(f"removed {len(removed)} temporary file(s) left in {run_dir} by a stopped write: {', '.join(removed)}")
    if resume:
        ckpt = _check_resume(config, run_dir)
    else:
        run_folder.check_fresh(run_dir)
        ckpt = None
    run = _build(config, run_dir, device, ckpt, progress)
    evaluated_at, train_seconds = _loop(config, run_dir, device, run, progress)
    return _finish(config, run_dir, run, evaluated_at, train_seconds)


def _build(config: TrainConfig, run_dir: pathlib.Path, device, ckpt: dict | None, progress: bool) -> _Run:
    """The data, config.json, the Koopman model, its report and table (KFC, KFC++), the augmenter, the agent and
    the sampler; from a checkpoint, their saved states."""
    import torch

    from kfc_lite.rl.augment import KoopmanAugmenter, make_augmenter
    from kfc_lite.rl.replay import TransitionSampler
    from kfc_lite.rl.sac import SACCQL
    from kfc_lite.settings import seed_everything

    seed_everything(config.seed)
    q, env_name, ds, da = prepare.load_transitions(config, progress)
    sac_config = config.sac_config(device)
    write_json_atomic(
        {
            "train": config.to_dict(),
            "sac": sac_config.to_dict(),
            "env": env_name,
            "state_dim": ds,
            "action_dim": da,
            "transitions": int(len(q["observations"])),
            "device": str(device),
            "torch": torch.__version__,
        },
        run_dir / "config.json",
    )

    model, koopman_history = None, None
    if config.method in KOOPMAN_METHODS:
        model, koopman_history = prepare.koopman_model(config, run_dir, q, ds, da, device, progress)
    augmenter = make_augmenter(config.method, model, **config.augmenter_kwargs())
    table = None
    if isinstance(augmenter, KoopmanAugmenter):
        prepare.koopman_report(config, augmenter, model, q, run_dir)
        table = prepare.run_symmetry_table(config, augmenter, model, q, run_dir, device, progress)
        augmenter.use_table(table)
    seed_everything(config.seed)  # the agent starts the same whether the Koopman model was trained or loaded
    agent = SACCQL(ds, da, sac_config, device)
    sampler = TransitionSampler(q, sac_config.batch_size, device, seed=config.seed, mode=config.sampling)
    run = _Run(agent, sampler, augmenter, table, env_name, koopman_history, start=0, last_checkpoint=None)
    if ckpt is not None:
        agent.load_state_dict(ckpt["agent"])
        sampler.load_state_dict(ckpt["sampler"])
        if "augmenter" in ckpt:
            augmenter.load_state_dict(ckpt["augmenter"])
        elif isinstance(augmenter, KoopmanAugmenter):
            warnings.warn(
                f"{run_dir / run_folder.CHECKPOINT_NAME} was written before checkpoints held the Koopman "
                "augmenter's branch draw: the run goes on with that draw's stream from its seed, so it will not "
                "repeat an uninterrupted run",
                RuntimeWarning,
                stacklevel=4,
            )
        set_rng_state(ckpt["rng"], device)
        run.start = run.last_checkpoint = int(ckpt["step"])
        run_folder.repair_metrics(run_dir / "metrics.jsonl", run.start)
    return run


def _loop(config: TrainConfig, run_dir: pathlib.Path, device, run: _Run, progress: bool) -> tuple[int, float]:
    """The gradient steps from ``run.start`` to ``config.steps``, with logging, evaluation and checkpoints.

    Returns the step of the last evaluation (-1: none) and the seconds spent training: the time spent evaluating
    and checkpointing is left out, so steps per second count training only.
    """
    from tqdm.auto import tqdm

    from kfc_lite.settings import release_cpu_memory

    agent, sampler, augmenter = run.agent, run.sampler, run.augmenter
    bar = tqdm(
        total=config.steps,
        initial=run.start,
        desc=f"{config.method} on {pathlib.Path(config.dataset).name}",
        unit="step",
        disable=not progress,
        dynamic_ncols=True,
    )
    postfix: dict = {}
    t_begin = t_log = time.perf_counter()
    paused = total_paused = 0.0
    steps_since_log, evaluated_at = 0, -1
    try:
        for step in range(run.start + 1, config.steps + 1):
            want = step % config.log_every == 0 or step == config.steps
            # the step: a batch of logged transitions, its augmented states, one update of the agent
            batch = sampler.sample()
            augmented = augmenter(batch)
            metrics = agent.update(batch, augmented, metrics=want)  # metrics=False: no device sync on most steps
            steps_since_log += 1
            if want:
                now = time.perf_counter()
                sps = steps_since_log / max(now - t_log - paused, 1e-9)
                t_log, paused, steps_since_log = now, 0.0, 0
                _log_train_row(run_dir, run, metrics, step, sps)
                postfix.update(sps=f"{sps:.1f}", q=f"{metrics['q_data']:.1f}")
                bar.set_postfix(postfix, refresh=False)
            do_eval = config.eval_episodes > 0 and (
                step == config.steps or bool(config.eval_every and step % config.eval_every == 0)
            )
            do_ckpt = step == config.steps or bool(config.checkpoint_every and step % config.checkpoint_every == 0)
            if do_eval or do_ckpt:
                t0 = time.perf_counter()
                score = _evaluate_and_checkpoint(config, run_dir, device, run, step, do_eval, do_ckpt)
                if score is not None:
                    evaluated_at = step
                    postfix["score"] = f"{score:.1f}"
                    bar.set_postfix(postfix, refresh=False)
                dt = time.perf_counter() - t0
                paused += dt
                total_paused += dt
            bar.update(1)
    finally:
        bar.close()
        release_cpu_memory()  # what the steps' temporaries kept in the C heap (kfc_lite.settings)
    return evaluated_at, time.perf_counter() - t_begin - total_paused


def _log_train_row(run_dir: pathlib.Path, run: _Run, metrics: dict, step: int, sps: float) -> None:
    """One ``train`` line of metrics.jsonl, after checking that the losses are finite."""
    metrics.update({f"aug_{k}": float(v) for k, v in run.augmenter.stats.items()})
    metrics.update(kind="train", step=step, steps_per_second=sps)
    bad = run_folder.nonfinite_metrics(metrics)
    if bad:
        raise diverged_error(step, ", ".join(f"{k} = {v}" for k, v in bad.items()), run_dir, run.last_checkpoint)
    append_metrics(run_dir, metrics)
    run.augmenter.reset_stats()  # augmentation statistics per logging interval


def _evaluate_and_checkpoint(
    config: TrainConfig, run_dir: pathlib.Path, device, run: _Run, step: int, do_eval: bool, do_ckpt: bool
) -> float | None:
    """Evaluate (an ``eval`` line and ``policies/step_<N>.pt``) and/or checkpoint at ``step``, from parameters
    checked to be finite; returns the normalized score when it evaluated."""
    from kfc_lite.files import save_verified
    from kfc_lite.rl.policy import save_policy

    agent = run.agent
    bad_tensor = run_folder.first_nonfinite(agent.state_dict(), "agent")
    if bad_tensor is not None:
        raise diverged_error(
            step,
            f"{bad_tensor} holds NaN or infinite values (the losses logged before were finite)",
            run_dir,
            run.last_checkpoint,
        )
    score = None
    if do_eval:
        row = _evaluate(agent, run.env_name, config, step)
        append_metrics(run_dir, row)
        meta = {"step": step, "method": config.method, "dataset": config.dataset, "env": run.env_name}
        save_policy(
            agent,
            run_dir / "policies" / f"step_{step}.pt",
            meta={**meta, "normalized": row["normalized"], "return": row["return"]},
        )
        score = row["normalized"]
    if do_ckpt:
        payload = _checkpoint_payload(agent, run.sampler, step, device, extra={"augmenter": run.augmenter.state_dict()})
        save_verified(payload, run_dir / run_folder.CHECKPOINT_NAME, label=f"step {step}")
        run.last_checkpoint = step
    return score


def _finish(config: TrainConfig, run_dir: pathlib.Path, run: _Run, evaluated_at: int, train_seconds: float):
    """``policy.pt``, ``result.json`` and the :class:`RunResult` of a run that reached ``config.steps``."""
    import torch

    from kfc_lite.rl.policy import save_policy

    agent = run.agent
    final_meta = {
        "step": agent.step,
        "method": config.method,
        "dataset": config.dataset,
        "env": run.env_name,
        "seed": config.seed,
    }
    metrics_path = run_dir / "metrics.jsonl"
    rows = read_metrics(run_dir) if metrics_path.is_file() else []
    evals = [r for r in rows if r["kind"] == "eval"]
    if evals and evals[-1]["step"] == agent.step:
        final_meta.update(normalized=evals[-1]["normalized"], **{"return": evals[-1]["return"]})
    policy_path = save_policy(agent, run_dir / "policy.pt", meta=final_meta)
    done = config.steps - run.start
    result = RunResult(
        run_dir=run_dir,
        config=config,
        metrics=[r for r in rows if r["kind"] == "train"],
        evals=evals,
        policy_path=policy_path,
        steps_per_second=done / train_seconds if train_seconds > 0 else float("nan"),
        agent=agent,
        koopman_history=run.koopman_history,
    )
    write_json_atomic(
        {
            "step": agent.step,
            "final_return": result.final_return,
            "final_normalized": result.final_normalized,
            "steps_per_second": result.steps_per_second,
            "evaluated_at": evaluated_at,
            "torch_threads": torch.get_num_threads(),
            "symmetry_table": run.table.summary() if run.table is not None else None,
        },
        run_dir / "result.json",
    )
    return result
