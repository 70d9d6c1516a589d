"""What a run gives back: :class:`RunResult` (both loops return one) and :func:`evaluate_run` (a finished run's policy,
evaluated again)."""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from kfc_lite.train import run_folder
from kfc_lite.train.config import TrainConfig

__all__ = ["RunResult", "evaluate_run"]


@dataclass
class RunResult:
    """What :func:`~kfc_lite.train.train` returns: the run folder, its config, metrics and evaluations, and the trained
    agent."""

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


def evaluate_run(
    run_dir, episodes: int = 10, env: str | None = None, seed: int = 0, max_episode_steps: int | None = None
) -> dict:
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
    return {
        "run": str(run_dir),
        "env": env,
        "episodes": episodes,
        "mean_return": res["mean_return"],
        "mean_normalized": res["mean_normalized"],
        "returns": [float(x) for x in res["returns"]],
        "normalized": [float(x) for x in res["normalized"]],
    }
