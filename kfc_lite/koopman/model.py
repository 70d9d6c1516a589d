"""The Koopman forward model with control (KFC's ``MLP_Koopman_Bilinear``, docs/paper.md, 'The Koopman forward model').

    s_t --E--> z_t --K(a_t)--> z_{t+1} --D--> s_{t+1},      K(a) = K0 + sum_i a_i K_i

* the encoder ``E`` is Linear-tanh-Linear-tanh-Linear-**tanh**, so every latent coordinate lies in (-1, 1);
* the decoder ``D`` is Linear-tanh-Linear-tanh-Linear;
* ``K0`` is one bias-free ``Linear(n, n)``; the ``K_i`` are stacked in one bias-free ``Linear(n, n * d_a)``.

Convention: latent vectors are columns, ``z' = K(a) z``. ``operator(a)[..., r, c]`` is row ``r``, column ``c``
of ``K(a)``, so ``K0 = k0.weight`` and ``K_i = k_actions.weight[i*n:(i+1)*n]``; batched code with latent
rows computes ``z' = z @ K(a).mT``. ``latent_step`` and ``operator`` agree to float precision (tested).

The original code clamps decoded states to the observation-space bounds. For MuJoCo those bounds are
infinite, so the clamp does nothing there; we do not clamp at all (we never clip silently), and the
model has no notion of bounds.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from torch import nn

from kfc_lite.files import atomic_torch_save

#: marks a file written by :func:`save_koopman`
CHECKPOINT_FORMAT = "kfc_lite.koopman.KoopmanForwardModel"
CHECKPOINT_VERSION = 1


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class KoopmanForwardModel(nn.Module):
    """Encoder ``E``, decoder ``D`` and an action-dependent latent operator ``K(a) = K0 + sum_i a_i K_i``.

    Args:
        state_dim: ``d_s``, the size of an observation.
        action_dim: ``d_a``, the size of an action.
        latent_dim: ``n``, the size of the latent state (paper: 32).
        hidden_dim: width of the two hidden layers of encoder and decoder (paper: 512).

    The model works on whatever device and dtype it is moved to (``model.to("cuda", torch.float64)``);
    inputs are expected on the same device and with the same dtype.
    """

    def __init__(self, state_dim: int, action_dim: int, latent_dim: int = 32, hidden_dim: int = 512):
        super().__init__()
        self.state_dim = _positive_int("state_dim", state_dim)
        self.action_dim = _positive_int("action_dim", action_dim)
        self.latent_dim = _positive_int("latent_dim", latent_dim)
        self.hidden_dim = _positive_int("hidden_dim", hidden_dim)
        d_s, d_a, n, h = self.state_dim, self.action_dim, self.latent_dim, self.hidden_dim
        self.encoder = nn.Sequential(
            nn.Linear(d_s, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, n), nn.Tanh()
        )
        self.decoder = nn.Sequential(nn.Linear(n, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d_s))
        self.k0 = nn.Linear(n, n, bias=False)
        self.k_actions = nn.Linear(n, n * d_a, bias=False)

    @property
    def config(self) -> dict:
        """The constructor arguments: ``KoopmanForwardModel(**model.config)`` builds the same architecture."""
        return {
            "state_dim": self.state_dim,
            "action_dim": self.action_dim,
            "latent_dim": self.latent_dim,
            "hidden_dim": self.hidden_dim,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())

    # -- the three pieces ------------------------------------------------------------------------------------
    def _check_last_dim(self, x: torch.Tensor, size: int, what: str) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{what} must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor(x, dtype=..., device=...)"
            )
        if x.shape[-1:] != (size,):
            raise ValueError(f"{what} must have last dimension {size} for this model, got shape {tuple(x.shape)}")

    def encode(self, s: torch.Tensor) -> torch.Tensor:
        """``E(s)``: (..., d_s) -> (..., n), every coordinate in (-1, 1)."""
        self._check_last_dim(s, self.state_dim, "the state s")
        return self.encoder(s)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``D(z)``: (..., n) -> (..., d_s)."""
        self._check_last_dim(z, self.latent_dim, "the latent z")
        return self.decoder(z)

    @property
    def K0(self) -> torch.Tensor:
        """The action-free part of the operator, (n, n)."""
        return self.k0.weight

    @property
    def K_actions(self) -> torch.Tensor:
        """The action parts stacked, (d_a, n, n): ``K_actions[i]`` multiplies ``a_i``."""
        return self.k_actions.weight.view(self.action_dim, self.latent_dim, self.latent_dim)

    def operator(self, a: torch.Tensor) -> torch.Tensor:
        """``K(a) = K0 + sum_i a_i K_i`` as matrices: (..., d_a) -> (..., n, n)."""
        self._check_last_dim(a, self.action_dim, "the action a")
        return self.K0 + torch.einsum("...i,irc->...rc", a, self.K_actions)

    def latent_step(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``z' = K(a) z`` for batches: z (..., n), a (..., d_a) -> (..., n).

        Computed as ``K0 z + sum_i a_i (K_i z)`` with two matrix products shared by the whole batch, as the
        original code does: forming a separate (n, n) matrix per sample would cost B*n*n memory and
        a batched matrix-vector product for the same result.
        """
        self._check_last_dim(z, self.latent_dim, "the latent z")
        self._check_last_dim(a, self.action_dim, "the action a")
        per_action = self.k_actions(z).unflatten(-1, (self.action_dim, self.latent_dim))  # (..., d_a, n)
        return self.k0(z) + (a.unsqueeze(-1) * per_action).sum(-2)

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The predicted next state ``D(K(a) E(s))``: s (..., d_s), a (..., d_a) -> (..., d_s)."""
        return self.decode(self.latent_step(self.encode(s), a))

    def rollout(self, s0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Open-loop k-step prediction that stays in the latent space.

        ``s0`` (..., d_s) and ``actions`` (..., k, d_a) -> predicted states (..., k, d_s) for steps 1..k:
        encode once, apply ``K(a_t)`` k times, decode every latent. Re-encoding the decoded state at every
        step would be a different (and not Koopman-linear) model.
        """
        self._check_last_dim(actions, self.action_dim, "the actions")
        if actions.dim() < 2:
            raise ValueError(f"actions must have shape (..., k, d_a), got {tuple(actions.shape)}")
        z = self.encode(s0)
        latents = []
        for t in range(actions.shape[-2]):
            z = self.latent_step(z, actions[..., t, :])
            latents.append(z)
        return self.decode(torch.stack(latents, dim=-2))


# -- checkpoints -------------------------------------------------------------------------------------------------
def _to_storable(value):
    """NumPy arrays become tensors so the file loads with ``weights_only=True`` (no arbitrary pickles)."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value))}
    if isinstance(value, dict):
        return {k: _to_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_storable(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _from_storable(value):
    if isinstance(value, dict):
        if set(value) == {"__ndarray__"}:
            return value["__ndarray__"].numpy()
        return {k: _from_storable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_storable(v) for v in value)
    return value


def save_koopman(model: KoopmanForwardModel, path, **extra) -> pathlib.Path:
    """Write ``model``'s weights and config, plus any ``extra`` entries, to ``path``.

    ``extra`` holds whatever should travel with the model: observation statistics (``obs_mean=...``),
    the training ``history``, the training config as a dict. Values may be tensors, NumPy arrays, numbers,
    strings, lists and dicts of those. The file is written to a temporary file in the same folder and
    renamed, so a crash never leaves half a checkpoint behind. Returns the path.
    """
    if not isinstance(model, KoopmanForwardModel):
        raise TypeError(f"save_koopman expects a KoopmanForwardModel, got {type(model).__name__}")
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "extra": _to_storable(dict(extra)),
    }
    return atomic_torch_save(payload, path)


def load_koopman(
    path, map_location=None, state_dim: int | None = None, action_dim: int | None = None
) -> KoopmanForwardModel:
    """Read a checkpoint written by :func:`save_koopman` and return the model (in eval mode).

    ``state_dim`` / ``action_dim``, when given, must match the file's model: a model trained on one task
    cannot be used on another, and the error says which dimension differs. The ``extra`` entries saved with
    the model are attached as ``model.extra`` (a dict; NumPy arrays come back as arrays).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no Koopman checkpoint at {path}: train one with fit_koopman and save it with save_koopman"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a Koopman checkpoint written by save_koopman (torch.load failed: {exc})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a Koopman checkpoint written by save_koopman "
            "(its 'format' entry is "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__!r})"
        )
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"{path} was written by a newer kfc_lite (checkpoint version {payload['version']}); upgrade kfc_lite"
        )
    config = payload["config"]
    for name, wanted in (("state_dim", state_dim), ("action_dim", action_dim)):
        if wanted is not None and config[name] != wanted:
            raise ValueError(
                f"{path} holds a Koopman model with {name}={config[name]}, but {name}={wanted} was asked for: "
                "this model was trained on another task; train one for this task or load the right file"
            )
    model = KoopmanForwardModel(**config)
    dtype = getattr(torch, payload.get("dtype", "float32"))
    model.to(dtype)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: the weights do not fit the model described by its config {config}: {exc}") from exc
    if map_location is not None:  # a device name or torch.device: where the model should live
        model.to(map_location)
    model.extra = _from_storable(payload.get("extra", {}))
    return model.eval()
