"""Replica recipes: D4RL's five MuJoCo dataset kinds rebuilt from our own behaviour policies.

D4RL (Fu et al., 2020) built its MuJoCo datasets from online SAC runs. We follow the same recipes, in gymnasium's
``-v4`` environments, with behaviour policies trained by :func:`kfc_lite.train.train_online_sac` and committed
under ``policies/`` with a card each (``policies/<env>-<level>.pt`` and ``.json``; see ``policies/README.md``):

=================  ==========================================================  =====================
recipe             data                                                        D4RL's size
=================  ==========================================================  =====================
``random``         uniform random actions (:class:`~kfc_lite.data.collect.RandomPolicy`)   1,000,000
``medium``         rollouts of the medium policy (about a third of expert)      1,000,000
``expert``         rollouts of the expert policy (a fully trained SAC)          1,000,000
``medium-replay``  the online run's replay buffer, in the order recorded, up    as recorded (every
                   to the step at which the medium policy was saved             transition until then)
``medium-expert``  the medium dataset followed by the expert dataset            2,000,000
=================  ==========================================================  =====================

Every file says it is a replica (``metadata/replica``), which recipe made it (``metadata/recipe``), the card of
each behaviour policy (``metadata/policy_card``, JSON) and the package versions (``metadata/versions/*``). A score
on a replica is not a score on D4RL: the policies, the simulator bindings and the environment version differ.

Two choices differ from D4RL, on purpose:

* ``medium-expert``: D4RL concatenated the two files as they were, so the last (cut) row of the medium part is
  followed by the first row of the expert part and ``qlearning_dataset`` makes one transition that jumps between
  them. We flag that row as a time-out, which drops exactly that transition.
* ``medium-replay`` with ``size``: D4RL's file is the whole buffer. A smaller version keeps whole episodes spread
  evenly over the run (every k-th episode), so it has the same mix of early and late behaviour; a plain prefix
  would hold only the random warm-up.

The pendulum (``pendulum-<kind>-replica``, docs/pendulum.md) follows the same five recipes with its own behaviour
policies (``policies/pendulum-medium.pt``, ``pendulum-expert.pt``, made by ``policies/pendulum.py``) and 200-step
episodes. It has no D4RL file to imitate, and its point is the low-data regime, so its default size is
:data:`PENDULUM_SIZES`: 5,000 transitions, 25 episodes.

Where things are (each name below also imports from here):

* :mod:`kfc_lite.data.policy_cards`: the committed behaviour policies and their cards (:func:`load_card`,
  :func:`file_sha256`, ...);
* :mod:`kfc_lite.data.replay_recipe`: the medium-replay recipe, :func:`replay_dataset`;
* here: the sizes, D4RL's published statistics, the medium-expert concatenation, and :func:`make_replica`, which
  makes any recipe.
"""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

from kfc_lite.data import registry
from kfc_lite.data.errors import OutputExistsError
from kfc_lite.data.policy_cards import (
    POLICY_LEVELS,
    card_path,
    file_sha256,
    load_card,
    policies_dir,
    policy_and_card,
)
from kfc_lite.data.replay_recipe import replay_dataset

__all__ = [
    "D4RL_SIZES",
    "PENDULUM_SIZES",
    "default_size",
    "D4RL_PUBLISHED",
    "POLICY_LEVELS",
    "policies_dir",
    "card_path",
    "load_card",
    "file_sha256",
    "replay_dataset",
    "concatenate",
    "make_replica",
    "parse_recipe",
]

#: Transitions in D4RL's files of each kind (``None``: as many as the replay buffer recorded).
D4RL_SIZES = {
    "random": 1_000_000,
    "medium": 1_000_000,
    "expert": 1_000_000,
    "medium-expert": 2_000_000,
    "medium-replay": None,
}
#: Default transitions of the pendulum's replicas: a few thousand (25 episodes of 200 steps), where an offline
#: agent has too little data to cover the state space and augmentation has something to add.
PENDULUM_SIZES = {"random": 5000, "medium": 5000, "expert": 5000, "medium-expert": 10_000, "medium-replay": 5000}
#: Statistics of the real D4RL -v2 files that later papers and dataset cards quote (transitions, mean episode
#: return, its normalized score). We could not download the files to check them: treat them as approximate.
_QUOTED = "quoted from the D4RL v2 dataset statistics, not re-measured here"
D4RL_PUBLISHED = {
    "hopper-medium-v2": dict(dataset="hopper-medium-v2", transitions=1_000_000, mean_return=1422.1, normalized=44.3),
    "hopper-medium-replay-v2": dict(
        dataset="hopper-medium-replay-v2", transitions=402_000, mean_return=467.3, normalized=15.0
    ),
    "hopper-expert-v2": dict(dataset="hopper-expert-v2", transitions=1_000_000, mean_return=3511.4, normalized=108.5),
    "halfcheetah-medium-v2": dict(
        dataset="halfcheetah-medium-v2", transitions=1_000_000, mean_return=4770.3, normalized=40.7
    ),
    "halfcheetah-medium-replay-v2": dict(
        dataset="halfcheetah-medium-replay-v2", transitions=202_000, mean_return=3093.3, normalized=27.2
    ),
    "halfcheetah-expert-v2": dict(
        dataset="halfcheetah-expert-v2", transitions=1_000_000, mean_return=10656.4, normalized=88.1
    ),
    "walker2d-medium-v2": dict(
        dataset="walker2d-medium-v2", transitions=1_000_000, mean_return=2852.1, normalized=62.1
    ),
    "walker2d-medium-replay-v2": dict(
        dataset="walker2d-medium-replay-v2", transitions=302_000, mean_return=682.7, normalized=14.8
    ),
    "walker2d-expert-v2": dict(
        dataset="walker2d-expert-v2", transitions=1_000_000, mean_return=4920.5, normalized=107.1
    ),
}
for _v in D4RL_PUBLISHED.values():
    _v["source"] = _QUOTED


def default_size(env: str, kind: str) -> int | None:
    """Transitions a recipe makes without ``size``: D4RL's for its families, :data:`PENDULUM_SIZES` for ours."""
    return PENDULUM_SIZES[kind] if env == "pendulum" else D4RL_SIZES[kind]


def concatenate(parts: list[dict]) -> dict:
    """D4RL's medium-expert recipe: the datasets one after another; a cut last row of a part becomes a time-out."""
    keys = [k for k in parts[0] if not k.startswith("metadata/")]
    for p in parts[1:]:
        keys = [k for k in keys if k in p]
    out = {}
    for k in keys:
        arrays = []
        for i, p in enumerate(parts):
            a = np.array(p[k], copy=True)
            if k == "timeouts" and i < len(parts) - 1 and not (p["terminals"][-1] or a[-1]):
                a[-1] = True  # see the module docstring: drop the transition that would jump between parts
            arrays.append(a)
        out[k] = np.concatenate(arrays)
    return out


# -- the entry point -------------------------------------------------------------------------------------------
def parse_recipe(recipe: str) -> tuple[str, str]:
    """``'hopper-medium-replica'`` -> ``('hopper', 'medium')``; ``<env>-random`` without the suffix is allowed."""
    import re

    key = str(recipe).strip().lower()
    m = re.fullmatch(
        r"(" + "|".join(registry.FAMILIES) + r")-(random|medium|medium-replay|medium-expert|expert)"
        r"(-replica)?",
        key,
    )
    if not m or (m.group(2) != "random" and not m.group(3)):
        raise ValueError(
            f"unknown recipe {recipe!r}: use <env>-<kind>-replica (e.g. hopper-medium-replica, "
            f"pendulum-random-replica) with env one of {', '.join(registry.FAMILIES)} and kind one of "
            f"{', '.join(registry.KINDS)}"
        )
    return m.group(1), m.group(2)


def make_replica(
    recipe: str,
    size: int | None = None,
    seed: int = 0,
    out=None,
    *,
    policy=None,
    expert_policy=None,
    buffer=None,
    up_to_step: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict:
    """Build one replica dataset; write it to ``out`` (a path) when given, and return it.

    ``size`` defaults to D4RL's (:data:`D4RL_SIZES`; the pendulum's: :data:`PENDULUM_SIZES`). ``policy`` (and
    ``expert_policy`` for medium-expert) are policy files; without them the committed cards
    (``policies/<env>-<level>.json``) are used. ``buffer`` and ``up_to_step`` (medium-replay) default to the run
    folder and the step on the medium card. An existing ``out`` is refused before any data are made
    (:class:`~kfc_lite.data.errors.OutputExistsError`) unless ``overwrite``.
    """
    from kfc_lite.data.collect import RandomPolicy, _versions, collect
    from kfc_lite.data.hdf5 import write_hdf5
    from kfc_lite.envs import make_env

    env, kind = parse_recipe(recipe)
    name = f"{env}-{kind}-replica"
    steps = registry.get(name).max_episode_steps
    if out is not None and not overwrite and os.path.exists(out):
        raise OutputExistsError(
            f"{out} already exists and would be replaced: pass --overwrite (overwrite=True) to "
            "replace it, or --out another path; nothing was generated"
        )
    if size is None:
        size = default_size(env, kind)
    elif isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive number of transitions, got {size!r}")
    if policy is not None and kind in ("random", "medium-replay"):
        raise ValueError(
            f"the {kind} recipe takes no behaviour policy file, drop --policy: "
            + (
                "it draws uniform random actions (D4RL's random policy)"
                if kind == "random"
                else "it reads the online run's replay buffer (--buffer, --up-to-step)"
            )
        )
    if expert_policy is not None and kind != "medium-expert":
        raise ValueError("an expert policy file is only used by the medium-expert recipe")
    cards: list[dict] = []
    if kind == "random":
        box = make_env(env)
        pol = RandomPolicy(box.action_space, seed=seed)
        box.close()
        data = collect(name, pol, size, seed=seed, progress=progress, policy_name=repr(pol), max_episode_steps=steps)
        cards.append({"policy": repr(pol)})
    elif kind in ("medium", "expert"):
        pol, card = policy_and_card(env, kind, policy)
        data = collect(
            name, pol, size, seed=seed, progress=progress, policy_name=card["policy_file"], max_episode_steps=steps
        )
        cards.append(card)
    elif kind == "medium-expert":
        med, med_card = policy_and_card(env, "medium", policy)
        exp, exp_card = policy_and_card(env, "expert", expert_policy)
        half = size // 2
        parts = [
            collect(
                name,
                med,
                half,
                seed=seed,
                progress=progress,
                policy_name=med_card["policy_file"],
                max_episode_steps=steps,
            ),
            collect(
                name,
                exp,
                size - half,
                seed=seed + 1,
                progress=progress,
                policy_name=exp_card["policy_file"],
                max_episode_steps=steps,
            ),
        ]
        data = concatenate(parts)
        data.update({k: v for k, v in parts[0].items() if k.startswith("metadata/")})
        data["metadata/policy"] = f"{med_card['policy_file']} (rows 0-{half - 1}) + {exp_card['policy_file']}"
        cards += [med_card, exp_card]
    else:  # medium-replay
        card = None
        if buffer is None or up_to_step is None:
            card = load_card(env, "medium")
            if buffer is None and card.get("replay_buffer"):  # stored relative to the repository root
                buffer = str(pathlib.Path(card["card_file"]).resolve().parents[1] / card["replay_buffer"])
            up_to_step = up_to_step if up_to_step is not None else card.get("replay_up_to_step")
        if buffer is None or not os.path.exists(buffer):
            raise FileNotFoundError(
                f"the medium-replay recipe reads the online run's replay buffer, and {buffer} is missing: it lives in "
                "the (git-ignored) run folder of the medium policy; rerun its training command from the card, or "
                "pass --buffer CHECKPOINT --up-to-step N"
            )
        data = replay_dataset(buffer, int(up_to_step), size=size, max_episode_steps=steps)
        data["metadata/env_id"] = registry.GYM_IDS[env]
        data["metadata/d4rl_env"] = name
        data["metadata/policy"] = f"replay buffer of {os.path.abspath(buffer)} up to step {up_to_step}"
        data["metadata/algorithm"] = "online SAC (kfc_lite.train.train_online_sac), its replay buffer"
        data["metadata/seed"] = int(card["seed"]) if card else -1
        data["metadata/replica"] = True
        data["metadata/max_episode_steps"] = steps
        for key, version in _versions().items():
            data[f"metadata/versions/{key}"] = str(version)
        cards.append(
            card
            or {
                "replay_buffer": os.path.abspath(buffer),
                "step": int(up_to_step),
                "card": "none (a buffer passed by hand)",
            }
        )
    data["metadata/recipe"] = name
    data["metadata/d4rl_size"] = -1 if env not in registry.ENVS or D4RL_SIZES[kind] is None else D4RL_SIZES[kind]
    if env in registry.RESCALED_ACTIONS:  # the file's actions are the agent's, in [-1, 1], not the env's own box
        data["metadata/action_space"] = "[-1, 1], rescaled onto the environment's box by gymnasium's RescaleAction"
    data["metadata/policy_card"] = json.dumps(cards, sort_keys=True)
    if out is not None:
        write_hdf5(data, out, overwrite=overwrite)
    return data
