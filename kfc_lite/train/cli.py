"""The command line of training: ``kfc-lite train``, ``kfc-lite eval`` and ``kfc-lite train-online``.

``--set key=value`` takes a field of :class:`~kfc_lite.train.config.TrainConfig`, of the agent's
:class:`~kfc_lite.rl.config.SACConfig` or of :class:`~kfc_lite.train.config.AugmentConfig` (each also as ``sac.X``,
``augment.X``), or ``koopman.<field>``; the value is read as JSON where it parses (``--set hidden=[64,64]``), else
as text.
"""

from __future__ import annotations

import argparse
import json
import pathlib

from kfc_lite.methods import METHODS
from kfc_lite.train import run_folder
from kfc_lite.train.config import TrainConfig
from kfc_lite.train.offline import train
from kfc_lite.train.online import train_online_sac
from kfc_lite.train.result import evaluate_run

__all__ = ["register"]


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
    given = {
        k: getattr(args, k)
        for k in ("dataset", "method", "env", "seed", "steps", "device")
        if getattr(args, k) is not None
    }
    sets = _parse_sets(args.set)
    if "out" in sets:
        raise ValueError(f"--set out={sets['out']}: the run folder is given by --out (here {run_dir}), not by --set")
    twice = sorted(set(given) & set(sets))
    if twice:
        raise ValueError(
            "given twice: "
            + ", ".join(f"--{k} {given[k]} and --set {k}={sets[k]}" for k in twice)
            + "; give each setting once"
        )
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
    summary = {
        "run": str(result.run_dir),
        "steps": result.agent.step,
        "final_return": result.final_return,
        "final_normalized": result.final_normalized,
        "steps_per_second": result.steps_per_second,
    }
    print(json.dumps(summary))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    res = evaluate_run(
        args.run_dir, episodes=args.episodes, env=args.env, seed=args.seed, max_episode_steps=args.max_episode_steps
    )
    print(json.dumps(res))
    return 0


def _cmd_train_online(args: argparse.Namespace) -> int:
    from kfc_lite.rl.sac import SACConfig

    config = SACConfig.preset("online-sac", **_parse_sets(args.set))
    result = train_online_sac(
        args.env,
        args.steps,
        seed=args.seed,
        out=args.out,
        config=config,
        start_steps=args.start_steps,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
    )
    print(
        json.dumps(
            {
                "run": str(result.run_dir),
                "steps_per_second": result.steps_per_second,
                "final_return": result.evals[-1]["return"] if result.evals else None,
            }
        )
    )
    return 0


def register(subparsers) -> None:
    """Add ``kfc-lite train``, ``kfc-lite eval`` and ``kfc-lite train-online``."""
    p = subparsers.add_parser(
        "train",
        help="train CQL / S4RL / KFC / KFC++ on a dataset (resumable run folder)",
        description="Train an offline RL agent; writes config.json, metrics.jsonl, checkpoint.pt, "
        "policy.pt (and koopman.pt) under --out.",
    )
    p.add_argument("--dataset", help="dataset name (hopper-medium-v2, hopper-medium-replica) or HDF5 path")
    p.add_argument("--method", default=None, choices=METHODS, help="default kfc++")
    p.add_argument(
        "--steps", type=int, default=None, help="total gradient steps (default 1,000,000; on --resume the new total)"
    )
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--env", default=None, help="D4RL family or gymnasium id, when the dataset does not say")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="any TrainConfig or SACConfig field, or koopman.<field>: --set q_lr=1e-4 --set eval_every=10000",
    )
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
