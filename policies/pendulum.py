"""Behaviour policies and reference returns for the library's pendulum task (docs/pendulum.md).

The MuJoCo behaviour policies come from ``policies/behaviour.py``: long SAC runs with the large networks of the
offline agent. The pendulum needs neither: online SAC with two hidden layers of 64 units swings it up and holds it
in a few thousand environment steps, a minute or two on one CPU core. This script runs that recipe and reuses
``behaviour.py`` for the rest (evaluating saved policies, writing cards), so pendulum cards read like the others.

Sub-commands (run from the repository root; one thread is plenty)::

    # online SAC, evaluation (5 episodes) and policies/step_N.pt every 250 steps; a few minutes
    OMP_NUM_THREADS=1 .venv/bin/python policies/pendulum.py train --steps 12000
    # 20-episode returns of the saved steps (cached in the run folder)
    .venv/bin/python policies/pendulum.py evaluate
    # the reference returns: uniform random actions, and the expert's mean action, 1000 episodes each
    OMP_NUM_THREADS=1 .venv/bin/python policies/pendulum.py references --expert-step 12000
    # copy a step into policies/pendulum-<level>.pt and write its card (.json and .md)
    .venv/bin/python policies/pendulum.py select medium --step N
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ENV = "pendulum"
#: small networks: the task has 3 observation values and 1 action, and the offline agents use the same sizes
HIDDEN = (64, 64)
#: Pendulum-v1 episodes are 200 steps: 1000 random steps are 5 episodes of warm-up. SAC goes from failing to swinging
#: the pendulum up within a thousand steps, so policies are saved every 250 steps to catch the levels in between
TRAIN_SETTINGS = dict(start_steps=1000, eval_every=250, eval_episodes=5, checkpoint_every=1000)
#: the "medium" level aims at this normalized score: D4RL's medium datasets lie at 40 to 62 (hopper 44, halfcheetah
#: 41, walker2d 62), "about a third of expert" in D4RL's words
MEDIUM_TARGET = 40.0
REFERENCE_EPISODES, REFERENCE_SEED = 1000, 100_000


def behaviour_module():
    """``policies/behaviour.py`` as a module (it is a script, not part of the package)."""
    if "behaviour_script" in sys.modules:
        return sys.modules["behaviour_script"]
    spec = importlib.util.spec_from_file_location("behaviour_script", HERE / "behaviour.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def sac_config():
    from kfc_lite.rl.sac import SACConfig

    return SACConfig.preset("online-sac", hidden=HIDDEN)


def cmd_train(args) -> int:
    from kfc_lite.train import train_online_sac

    out = behaviour_module().run_dir(ENV, args.seed)
    resume = (out / "checkpoint.pt").exists()
    res = train_online_sac(
        ENV,
        args.steps,
        seed=args.seed,
        out=out,
        config=sac_config(),
        resume=resume,
        buffer_size=args.steps,
        progress=False,
        **TRAIN_SETTINGS,
    )
    for row in res.evals:
        print(f"step {row['step']:>6}: return {row['return']:8.1f}  normalized {row['normalized']:6.1f}")
    print(f"done: {res.steps_per_second:.1f} steps/s, policy {res.policy_path}")
    return 0


def cmd_evaluate(args) -> int:
    bh = behaviour_module()
    return bh.cmd_evaluate(argparse.Namespace(env=ENV, steps=args.steps, seed=args.seed))


def _returns(policy, episodes: int, seed: int):
    from kfc_lite.envs import evaluate

    return evaluate(policy, ENV, episodes=episodes, seed=seed)["returns"]


def cmd_references(args) -> int:
    """Mean returns of uniform random actions and of the expert's mean action, with their standard errors."""
    import numpy as np

    from kfc_lite.data.collect import RandomPolicy
    from kfc_lite.envs import make_env
    from kfc_lite.rl import load_policy

    env = make_env(ENV)
    random_policy = RandomPolicy(env.action_space, seed=args.seed)
    env.close()
    expert_file = behaviour_module().run_dir(ENV, args.seed) / "policies" / f"step_{args.expert_step}.pt"
    out = {"episodes": args.episodes, "reset_seeds": f"{REFERENCE_SEED}+i"}
    for name, policy in (("random", random_policy), ("expert", load_policy(expert_file))):
        r = _returns(policy, args.episodes, REFERENCE_SEED)
        out[name] = {
            "mean_return": float(r.mean()),
            "std_return": float(r.std(ddof=1)),
            "standard_error": float(r.std(ddof=1) / np.sqrt(len(r))),
        }
        print(
            f"{name:>7}: mean return {r.mean():9.2f} +- {r.std(ddof=1) / np.sqrt(len(r)):.2f} (standard error; "
            f"SD {r.std(ddof=1):.1f}) over {len(r)} episodes"
        )
    out["expert_policy"] = str(expert_file.relative_to(HERE.parent))
    path = expert_file.parents[1] / "references.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def cmd_select(args) -> int:
    """``behaviour.py select`` for the pendulum, then the card says how this run differs from the MuJoCo recipe."""
    bh = behaviour_module()
    rc = bh.cmd_select(argparse.Namespace(env=ENV, level=args.level, step=args.step, seed=args.seed, note=args.note))
    if rc:
        return rc
    name = f"{ENV}-{args.level}"
    card_file = bh.POLICIES / f"{name}.json"
    card = json.loads(card_file.read_text())
    cfg = json.loads((bh.run_dir(ENV, args.seed) / "config.json").read_text())
    card.update(
        algorithm=f"online SAC, kfc_lite.train.train_online_sac (SACConfig preset 'online-sac', hidden {list(HIDDEN)})",
        train_settings=TRAIN_SETTINGS,
        selection=(
            f"the step whose 20-episode normalized score with sampled actions (the data's behaviour) is "
            f"nearest {MEDIUM_TARGET:.0f}, D4RL's medium level"
            if args.level == "medium"
            else "the best evaluated step"
        ),
        command=(
            f"OMP_NUM_THREADS=1 python policies/pendulum.py train --steps {cfg['steps']} --seed {args.seed}  "
            f"# then: python policies/pendulum.py select {args.level} --step {args.step}"
        ),
    )
    card_file.write_text(json.dumps(card, indent=1) + "\n")
    card_file.with_suffix(".md").write_text(
        bh.card_markdown(card).replace(
            "(gymnasium, mujoco bindings; D4RL used gym's -v3 on mujoco-py)",
            "(gymnasium; torque rescaled to [-1, 1] by kfc_lite.envs.make_env)",
        )
    )
    print(f"rewrote {card_file.name} and {name}.md for the pendulum recipe")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="online SAC on the pendulum (a minute or two)")
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)
    e = sub.add_parser("evaluate", help="20-episode returns of saved step_N.pt policies (cached)")
    e.add_argument("--steps", type=int, nargs="*")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=cmd_evaluate)
    r = sub.add_parser("references", help="mean returns of random actions and of the expert (the normalized scale)")
    r.add_argument("--expert-step", type=int, required=True)
    r.add_argument("--episodes", type=int, default=REFERENCE_EPISODES)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_references)
    c = sub.add_parser("select", help="copy step_N.pt to policies/pendulum-<level>.pt and write its card")
    c.add_argument("level", choices=["medium", "expert"])
    c.add_argument("--step", type=int, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--note", help="why this step (recorded on the card)")
    c.set_defaults(func=cmd_select)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
