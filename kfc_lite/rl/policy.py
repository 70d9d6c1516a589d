"""Policy files: a trained actor with its dimensions and a metadata dict, written atomically.

``save_policy(agent_or_actor, path, meta)`` and ``load_policy(path) -> Policy``; a :class:`Policy` has
``act(obs, deterministic=True) -> np.ndarray`` (the interface ``kfc_lite.envs.evaluate`` and the data
collectors use) and ``act_with_log_prob(obs)``. The file holds tensors and plain values only, so it loads
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from kfc_lite.files import atomic_torch_save
from kfc_lite.rl.networks import TanhGaussianActor, observation_batch

__all__ = ["Policy", "save_policy", "load_policy", "POLICY_FORMAT"]

POLICY_FORMAT = "kfc-lite-policy"
POLICY_VERSION = 1


class Policy:
    """A tanh-Gaussian actor for acting: NumPy in, NumPy out, no gradients.

    ``act(obs)`` takes one observation ``(ds,)`` or a batch ``(N, ds)`` and returns actions of the same rank;
    ``deterministic=True`` is the mean action ``tanh(mean)`` (evaluation), ``False`` a sample.
    """

    def __init__(self, actor: TanhGaussianActor, meta: dict | None = None, device="cpu"):
        self.actor = actor.to(device).eval()
        self.device = torch.device(device)
        self.meta = dict(meta or {})
        self.state_dim, self.action_dim = actor.state_dim, actor.action_dim

    def __repr__(self) -> str:
        return f"Policy(state_dim={self.state_dim}, action_dim={self.action_dim}, meta={sorted(self.meta)})"

    def _obs(self, obs) -> tuple[torch.Tensor, bool]:
        return observation_batch(obs, self.state_dim, self.device)

    @torch.no_grad()
    def act(self, obs, deterministic: bool = True) -> np.ndarray:
        x, single = self._obs(obs)
        a = self.actor.deterministic(x) if deterministic else self.actor.sample(x)[0]
        a = a.cpu().numpy()
        return a[0] if single else a

    __call__ = act

    @torch.no_grad()
    def act_with_log_prob(self, obs) -> tuple[np.ndarray, np.ndarray]:
        """A sampled action and its log-density (D4RL stores this as ``infos/action_log_probs``)."""
        x, single = self._obs(obs)
        a, logp = self.actor.sample(x)
        a, logp = a.cpu().numpy(), logp.cpu().numpy()
        return (a[0], logp[0]) if single else (a, logp)


def _actor_of(obj) -> TanhGaussianActor:
    actor = getattr(obj, "actor", obj)
    if not isinstance(actor, TanhGaussianActor):
        raise TypeError(
            f"save_policy takes a TanhGaussianActor, a Policy or an agent with .actor, got {type(obj).__name__}"
        )
    return actor


def save_policy(actor_or_agent, path, meta: dict | None = None) -> pathlib.Path:
    """Write the actor of ``actor_or_agent`` (an actor, a :class:`Policy` or a ``SACCQL``) to ``path``.

    ``meta`` holds plain values (numbers, strings, lists, dicts): the dataset, the method, the step, scores.
    """
    actor = _actor_of(actor_or_agent)
    payload = {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        "state_dim": actor.state_dim,
        "action_dim": actor.action_dim,
        "hidden": list(actor.hidden),
        "state_dict": {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()},
        "meta": dict(meta or {}),
    }
    return atomic_torch_save(payload, path)


def load_policy(path, state_dim: int | None = None, action_dim: int | None = None, device="cpu") -> Policy:
    """Read a file written by :func:`save_policy`; ``state_dim``/``action_dim``, when given, must match."""
    from kfc_lite.settings import resolve_device

    path = pathlib.Path(path)
    if path.is_dir():
        path = path / "policy.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"no policy file at {path}: train one with `kfc-lite train` (it writes RUN/policy.pt) "
            "or save one with save_policy"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a policy file written by save_policy (torch.load failed: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != POLICY_FORMAT:
        raise ValueError(f"{path} is not a policy file written by save_policy")
    if payload.get("version", 0) > POLICY_VERSION:
        raise ValueError(
            f"{path} was written by a newer kfc_lite (policy version {payload['version']}); upgrade kfc_lite"
        )
    for name, wanted in (("state_dim", state_dim), ("action_dim", action_dim)):
        if wanted is not None and payload[name] != wanted:
            raise ValueError(
                f"{path} holds a policy with {name}={payload[name]}, but {name}={wanted} was asked for: "
                "it was trained on another task"
            )
    actor = TanhGaussianActor(payload["state_dim"], payload["action_dim"], tuple(payload["hidden"]))
    actor.load_state_dict(payload["state_dict"])
    return Policy(actor, payload.get("meta"), device=resolve_device(device))
