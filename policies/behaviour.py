"""Behaviour policies for the D4RL replicas: train online SAC, evaluate its saved policies, pick and card one.

D4RL built its MuJoCo datasets from SAC runs (Fu et al., 2020, appendix): "expert" is a fully trained SAC policy,
"medium" one stopped at about a third of the expert's return, "medium-replay" the replay buffer of the run up to
the medium policy, "random" a randomly initialised policy. We follow the same recipe with our own online SAC
(:func:`kfc_lite.train.train_online_sac`) in gymnasium's ``-v4`` MuJoCo environments.

Sub-commands (run from the repository root; every one is safe to rerun)::

    # long job, resumable: checkpoints every 10k steps under runs/behaviour/<env>-sac-seed<seed>/
    OMP_NUM_THREADS=1 nohup .venv/bin/python policies/behaviour.py train hopper --steps 300000 \
        > runs/behaviour/hopper.log 2>&1 &
    # the same command with --resume continues after an interruption
    # 20-episode evaluation of the saved step_N.pt files (results cached in the run folder)
    .venv/bin/python policies/behaviour.py evaluate hopper --steps 60000 70000 80000
    # copy one into policies/<env>-<level>.pt and write its card (.json and .md)
    .venv/bin/python policies/behaviour.py select hopper medium --step 80000
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "behaviour"
POLICIES = ROOT / "policies"

#: Settings of every behaviour run (recorded on each card); evaluation every 10k steps saves policies/step_N.pt.
TRAIN_DEFAULTS = dict(start_steps=10_000, eval_every=10_000, eval_episodes=5, checkpoint_every=10_000)


def run_dir(env: str, seed: int) -> pathlib.Path:
    return RUNS / f"{env}-sac-seed{seed}"


def cmd_train(args) -> int:
    from kfc_lite.train import train_online_sac

    out = run_dir(args.env, args.seed)
    resume = args.resume or (out / "checkpoint.pt").exists()
    res = train_online_sac(
        args.env, args.steps, seed=args.seed, out=out, resume=resume, progress=False, **TRAIN_DEFAULTS
    )
    print(f"done: {res.steps_per_second:.1f} steps/s, policy {res.policy_path}")
    return 0


#: 20 evaluation episodes start from reset(seed=EVAL_SEED + i): disjoint from the training run's own evaluations
EVAL_SEED, EVAL_EPISODES = 10_000, 20


class Sampled:
    """A policy that samples its actions (``deterministic=False``), as the data collector does."""

    def __init__(self, policy):
        self.policy = policy

    def act(self, obs, deterministic: bool = True):
        return self.policy.act(obs, deterministic=False)


def _stats(env: str, returns) -> dict:
    import numpy as np

    from kfc_lite.data.registry import normalized_score

    r = np.asarray(returns, dtype=float)
    n = normalized_score(env, r)
    return {
        "mean_return": float(r.mean()),
        "std_return": float(r.std()),
        "min_return": float(r.min()),
        "max_return": float(r.max()),
        "mean_normalized": float(n.mean()),
        "std_normalized": float(n.std()),
        "returns": [round(float(x), 2) for x in r],
    }


def evaluate_policy(path, env: str, torch_seed: int = 0) -> dict:
    """20 episodes with sampled actions (the behaviour that makes the data) and 20 with the mean action."""
    import torch

    from kfc_lite.envs import evaluate
    from kfc_lite.rl import load_policy

    pol = load_policy(path)
    torch.manual_seed(torch_seed)
    sampled = evaluate(Sampled(pol), env, episodes=EVAL_EPISODES, seed=EVAL_SEED)
    mean = evaluate(pol, env, episodes=EVAL_EPISODES, seed=EVAL_SEED)
    return {
        "episodes": EVAL_EPISODES,
        "seed": EVAL_SEED,
        "sampled": _stats(env, sampled["returns"]),
        "deterministic": _stats(env, mean["returns"]),
    }


def _eval_cache(env: str, seed: int) -> pathlib.Path:
    return run_dir(env, seed) / "eval20.json"


def cmd_evaluate(args) -> int:
    out = run_dir(args.env, args.seed)
    cache_file = _eval_cache(args.env, args.seed)
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    steps = args.steps or sorted(int(p.stem.split("_")[1]) for p in (out / "policies").glob("step_*.pt"))
    print(f"{'step':>8} {'sampled return':>22} {'normalized':>11} {'mean-action return':>22} {'normalized':>11}")
    for step in steps:
        path = out / "policies" / f"step_{step}.pt"
        if not path.is_file():
            print(f"{step:>8} (no policy file)")
            continue
        key = f"{step}"
        if key not in cache:
            cache[key] = evaluate_policy(path, args.env)
            cache_file.write_text(json.dumps(cache, indent=1))
        s, d = cache[key]["sampled"], cache[key]["deterministic"]
        print(
            f"{step:>8} {s['mean_return']:>12.1f} +- {s['std_return']:>6.1f} {s['mean_normalized']:>11.1f} "
            f"{d['mean_return']:>12.1f} +- {d['std_return']:>6.1f} {d['mean_normalized']:>11.1f}"
        )
    return 0


def replay_fingerprint(checkpoint, up_to_step: int) -> str:
    """sha256 of the replay rows 1..up_to_step, so a card can tell whether a buffer still holds the same data."""
    import hashlib

    import torch

    buf = torch.load(checkpoint, map_location="cpu", weights_only=True)["buffer"]["data"]
    h = hashlib.sha256()
    for k in sorted(buf):
        h.update(buf[k][:up_to_step].numpy().tobytes())
    return "sha256:" + h.hexdigest()


def cmd_select(args) -> int:
    import datetime
    import platform
    import shutil

    import kfc_lite
    from kfc_lite.data.collect import _versions
    from kfc_lite.data.registry import GYM_IDS
    from kfc_lite.data.replicas import D4RL_PUBLISHED, file_sha256

    out = run_dir(args.env, args.seed)
    src = out / "policies" / f"step_{args.step}.pt"
    if not src.is_file():
        raise SystemExit(
            f"{src} does not exist: pick a step that the run evaluated (python policies/behaviour.py "
            f"evaluate {args.env})"
        )
    cache_file = _eval_cache(args.env, args.seed)
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    ev = cache.get(str(args.step)) or evaluate_policy(src, args.env)
    cfg = json.loads((out / "config.json").read_text())
    name = f"{args.env}-{args.level}"
    dst = POLICIES / f"{name}.pt"
    shutil.copyfile(src, dst)
    rel_run = out.relative_to(ROOT)
    card = {
        "name": name,
        "env": args.env,
        "gym_id": GYM_IDS[args.env],
        "level": args.level,
        "policy_file": dst.name,
        "sha256": file_sha256(dst),
        "algorithm": "online SAC, kfc_lite.train.train_online_sac (SACConfig preset 'online-sac')",
        "training_steps": args.step,
        "seed": args.seed,
        "run_steps_planned": cfg["steps"],
        "start_steps": cfg["start_steps"],
        "sac": cfg["sac"],
        "train_settings": TRAIN_DEFAULTS,
        "evaluation": ev,
        "selection": "the step whose 20-episode mean return with sampled actions (the data's behaviour) is nearest "
        "the D4RL dataset of this level"
        if args.level == "medium"
        else "best evaluated step",
        "selection_note": args.note or "",
        "d4rl_reference": D4RL_PUBLISHED.get(f"{args.env}-{args.level}-v2"),
        "run_dir": str(rel_run),
        "command": (
            f"OMP_NUM_THREADS=1 python policies/behaviour.py train {args.env} --steps {cfg['steps']} "
            f"--seed {args.seed}  # then: python policies/behaviour.py select {args.env} {args.level} "
            f"--step {args.step}"
        ),
        "note": "online SAC is not bit-exact across machines or after a resume; the command reproduces the recipe, "
        "the committed .pt file is the policy",
        "versions": _versions(),
        "torch": __import__("torch").__version__,
        "kfc_lite": kfc_lite.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if args.level == "medium":
        ckpt = out / "checkpoint.pt"
        card["replay_buffer"] = str(ckpt.relative_to(ROOT))
        card["replay_up_to_step"] = args.step
        card["replay_sha256"] = replay_fingerprint(ckpt, args.step)
    (POLICIES / f"{name}.json").write_text(json.dumps(card, indent=1) + "\n")
    (POLICIES / f"{name}.md").write_text(card_markdown(card))
    print(f"wrote {dst}, {name}.json, {name}.md")
    return 0


def card_markdown(card: dict) -> str:
    s, d = card["evaluation"]["sampled"], card["evaluation"]["deterministic"]
    ref = card.get("d4rl_reference") or {}
    lines = [
        f"# Behaviour policy `{card['name']}`",
        "",
        f"* environment: {card['gym_id']} (gymnasium, mujoco bindings; D4RL used gym's -v3 on mujoco-py)",
        f"* algorithm: {card['algorithm']}",
        f"* training: {card['training_steps']} environment steps (one gradient step each after "
        f"{card['start_steps']} random ones), seed {card['seed']}",
        f"* file: `{card['policy_file']}` ({card['sha256']})",
        f"* return over {card['evaluation']['episodes']} episodes (reset seeds {card['evaluation']['seed']}+i):",
        f"  * sampled actions (how the data is collected): {s['mean_return']:.1f} +- {s['std_return']:.1f} "
        f"(min {s['min_return']:.1f}, max {s['max_return']:.1f}); normalized {s['mean_normalized']:.1f} +- "
        f"{s['std_normalized']:.1f}",
        f"  * mean action: {d['mean_return']:.1f} +- {d['std_return']:.1f}; normalized {d['mean_normalized']:.1f}",
    ]
    if ref:
        lines.append(
            f"* D4RL's {ref['dataset']} for comparison: mean return {ref['mean_return']}, normalized "
            f"{ref['normalized']} ({ref['source']})"
        )
    if card.get("replay_buffer"):
        lines.append(
            f"* replay buffer (medium-replay recipe): `{card['replay_buffer']}` rows 1..{card['replay_up_to_step']}"
            " (git-ignored; rerun the command to rebuild it)"
        )
    lines += [
        f"* selection: {card['selection']}" + (f". {card['selection_note']}" if card.get("selection_note") else ""),
        f"* reproduce: `{card['command']}`",
        f"* note: {card['note']}",
        f"* versions: {card['versions']}, torch {card['torch']}; machine {card['machine']}; {card['created']}",
        "",
    ]
    return "\n".join(lines)


def cmd_table(args) -> int:
    """Markdown rows for the README: each replica file beside the real D4RL dataset's published statistics."""
    from kfc_lite.data import episode_returns, load
    from kfc_lite.data.registry import normalized_score
    from kfc_lite.data.replicas import D4RL_PUBLISHED

    print(
        "| replica | transitions | episodes | mean return | normalized | D4RL v2 dataset | transitions | "
        "mean return | normalized |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.files:
        d = load(path, progress=False)
        name = d["metadata/recipe"] if "metadata/recipe" in d else d["metadata/d4rl_env"]
        returns, _ = episode_returns(d, complete_only=True)
        ref = D4RL_PUBLISHED.get(name.replace("-replica", "-v2"), {})
        env = name.split("-")[0]
        print(
            f"| {name} | {len(d['observations']):,} | {len(returns)} | {returns.mean():.1f} | "
            f"{normalized_score(env, returns).mean():.1f} | {ref.get('dataset', '-')} | "
            f"{format(ref['transitions'], ',') if ref else '-'} | {ref.get('mean_return', '-')} | "
            f"{ref.get('normalized', '-')} |"
        )
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="online SAC, resumable (long)")
    t.add_argument("env")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--resume", action="store_true")
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="20-episode returns of saved step_N.pt policies (cached)")
    e.add_argument("env")
    e.add_argument("--steps", type=int, nargs="*")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)
    c = sub.add_parser("select", help="copy step_N.pt to policies/<env>-<level>.pt and write its card")
    c.add_argument("env")
    c.add_argument("level", choices=["medium", "expert"])
    c.add_argument("--step", type=int, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--note", help="why this step (recorded on the card), e.g. how it compares with D4RL's level")
    c.set_defaults(func=cmd_select)
    b = sub.add_parser("table", help="markdown rows: replica files beside D4RL's published statistics")
    b.add_argument("files", nargs="+", help="replica HDF5 files or names in the cache")
    b.set_defaults(func=cmd_table)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
