"""What an offline run needs before its first step: the transitions and their environment, and for KFC and KFC++ the
frozen Koopman model, its quality report and the dataset's symmetry table."""

from __future__ import annotations

import dataclasses
import pathlib
import warnings

import numpy as np

from kfc_lite.train.config import TrainConfig
from kfc_lite.train.records import write_json_atomic

__all__ = ["load_transitions", "koopman_model", "koopman_report", "run_symmetry_table"]


def load_transitions(config: TrainConfig, progress: bool):
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
            raise ValueError(
                f"cannot tell which environment {config.dataset!r} comes from (no usable metadata): "
                "pass env, e.g. --env hopper or --env Hopper-v4"
            ) from None
    q = kdata.qlearning_dataset(raw)
    env = envs.make_env(env_name)
    try:
        ds, da = env.observation_space.shape[0], env.action_space.shape[0]
        low, high = env.action_space.low, env.action_space.high
    finally:
        env.close()
    if q["observations"].shape[1] != ds or q["actions"].shape[1] != da:
        raise ValueError(
            f"the dataset {config.dataset!r} has states of dimension {q['observations'].shape[1]} and "
            f"actions of dimension {q['actions'].shape[1]}, but {envs.gym_id(env_name)} has {ds} and {da}: "
            "is env right? (pass the environment the data was collected in)"
        )
    if not (np.allclose(low, -1) and np.allclose(high, 1)):
        raise ValueError(
            f"{envs.gym_id(env_name)} has actions in [{low.min()}, {high.max()}]; this agent's tanh policy "
            "acts in [-1, 1] (all D4RL MuJoCo tasks do)"
        )
    amax = float(np.abs(q["actions"]).max())
    if amax > 1.0 + 1e-5:
        raise ValueError(
            f"the dataset's actions reach |a| = {amax:.3g} > 1, outside the action box [-1, 1]: "
            "the data do not fit this environment, or need rescaling before training"
        )
    return q, env_name, ds, da


def koopman_model(config: TrainConfig, run_dir: pathlib.Path, q: dict, ds: int, da: int, device, progress: bool):
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
            model, history = fit_koopman(
                q, config.koopman_config(), device=device, progress=progress, checkpoint=partial
            )
            save_koopman(model, path, history=history, dataset=config.dataset)
            remove_verified(partial)
    model = load_koopman(path, map_location=device, state_dim=ds, action_dim=da)
    model.requires_grad_(False)
    return model.eval(), history


def run_symmetry_table(config: TrainConfig, augmenter, model, q: dict, run_dir: pathlib.Path, device, progress: bool):
    """The dataset's symmetry table, cached beside the Koopman model the run was given (so runs that share a model
    share its table) or in the run folder; its build time and size are printed and go to result.json."""
    from kfc_lite.symmetry_table import symmetry_table

    cache_dir = pathlib.Path(config.koopman_path).parent if config.koopman_path is not None else run_dir
    settings = dataclasses.replace(augmenter.table_settings, storage=config.augment.table_storage)
    table = symmetry_table(
        model, q, settings, cache_dir, memory_budget_gb=config.augment.table_memory_gb, progress=progress
    )
    how = f"built in {table.build_seconds:.1f} s" if table.build_seconds is not None else "loaded from the cache"
    print(
        f"symmetry table: {len(table):,} rows, {table.nbytes / 2**20:.1f} MiB ({table.bytes_per_row} bytes a row, "
        f"{'memory-mapped' if table.mapped else 'in memory'}), {how}; guard fall-back rate "
        f"{table.fallback_rate:.2%} ({table.path})",
        flush=True,
    )
    return table.to(device)


def koopman_report(config: TrainConfig, augmenter, model, q: dict, run_dir: pathlib.Path) -> dict:
    """The Koopman model's quality report: saved as koopman_report.json, printed, and its gate applied.

    Runs before the symmetry table and the agent, so that koopman_gate="error" stops the run before either.
    """
    from kfc_lite.koopman.report import format_report, gate_message, jsonable, koopman_report

    report = koopman_report(model, q, augmenter, seed=config.seed)
    write_json_atomic(jsonable(report), run_dir / "koopman_report.json")
    print(format_report(report), flush=True)
    message = gate_message(report)
    if message is None or config.koopman_gate == "off":
        return report
    if config.koopman_path is not None:
        message += f" (The model comes from koopman_path={config.koopman_path}: train that file longer.)"
    if config.koopman_gate == "error":
        raise ValueError(
            f"{message} No symmetry table was built and no agent trained; {run_dir} keeps the Koopman "
            "model (koopman.pt) and koopman_report.json: start again in another out folder."
        )
    warnings.warn(message, RuntimeWarning, stacklevel=4)
    return report
