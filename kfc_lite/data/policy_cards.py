"""The committed behaviour policies of the replica recipes, and their cards.

A behaviour policy (``policies/<env>-<level>.pt``, made by ``policies/behaviour.py``) comes with a card
(``policies/<env>-<level>.json``, see ``policies/README.md``) that says how it was trained and holds the policy
file's SHA-256. A replica records the card of each policy that made it, so a file can be traced back to the
policy; a policy file that no longer matches its card is refused.

Sibling modules: :mod:`kfc_lite.data.replicas` makes the replicas (and re-exports the public names here);
:mod:`kfc_lite.data.replay_recipe` is the medium-replay recipe, which reads a run's replay buffer instead.
"""

from __future__ import annotations

import json
import os
import pathlib

from kfc_lite.files import file_digest

__all__ = ["POLICY_LEVELS", "policies_dir", "card_path", "load_card", "file_sha256", "policy_and_card"]

#: Behaviour-policy levels that have cards.
POLICY_LEVELS = ("medium", "expert")


def policies_dir() -> pathlib.Path:
    """Where the committed behaviour policies live: ``$KFC_POLICIES_DIR``, else ``policies/`` of this checkout."""
    env = os.environ.get("KFC_POLICIES_DIR")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path(__file__).resolve().parents[2] / "policies"


def card_path(env: str, level: str) -> pathlib.Path:
    """Where the card of the ``<env>-<level>`` behaviour policy is (or would be)."""
    return policies_dir() / f"{env}-{level}.json"


def load_card(env: str, level: str) -> dict:
    """The card of the committed ``<env>-<level>`` behaviour policy; a clear error when there is none yet."""
    if level not in POLICY_LEVELS:
        raise ValueError(f"behaviour policies come in levels {POLICY_LEVELS}, not {level!r}")
    path = card_path(env, level)
    if not path.is_file():
        raise FileNotFoundError(
            f"{env}-{level} needs a behaviour policy, and none is committed yet ({path} is missing): train one with "
            f"`python policies/behaviour.py train {env} --steps N` and pick it with `python policies/behaviour.py "
            f"select {env} {level} --step N` (policies/README.md), or pass a policy file explicitly"
        )
    card = json.loads(path.read_text())
    card["card_file"] = str(path)
    return card


def file_sha256(path) -> str:
    """``"sha256:<hex>"`` of a file, the form a card records its policy file's hash in."""
    return "sha256:" + file_digest(path)


def policy_and_card(env: str, level: str, policy_file):
    """A loaded behaviour policy and what we record about it: the committed card, or the file and its hash."""
    from kfc_lite.rl import load_policy

    if policy_file is None:
        card = load_card(env, level)
        policy_file = pathlib.Path(card["card_file"]).with_name(card["policy_file"])
        if file_sha256(policy_file) != card["sha256"]:
            raise ValueError(
                f"{policy_file} does not match its card {card['card_file']} (sha256 differs): the file "
                "was replaced without a new card; rerun `policies/behaviour.py select`"
            )
    else:
        if not os.path.exists(policy_file):
            raise FileNotFoundError(f"policy file {policy_file}: no such file")
        card = {
            "policy_file": os.path.abspath(policy_file),
            "sha256": file_sha256(policy_file),
            "level": level,
            "env": env,
            "card": "none (a policy file passed by hand)",
        }
    return load_policy(policy_file), card
