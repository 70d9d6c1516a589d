"""Batches for training: uniform sampling from device-resident transitions (offline) and a ring buffer (online).

Both draw indices with their own ``torch.Generator`` on the data's device, so the sampler's state is one
tensor to checkpoint (``state_dict``) and a resumed run draws exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["TransitionSampler", "ReplayBuffer"]

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


class TransitionSampler:
    """Uniform minibatches (with replacement, as the authors' loader) from a fixed set of transitions.

    The arrays are copied to ``device`` once (float32; terminals bool); ``sample()`` indexes them there, so no
    batch crosses the PCIe bus during training.
    """

    def __init__(self, transitions: dict, batch_size: int, device="cpu", seed: int = 0):
        missing = [k for k in KEYS if k not in transitions]
        if missing:
            raise KeyError(f"transitions need {list(KEYS)}; missing {missing} (use kfc_lite.data.qlearning_dataset)")
        self.device = torch.device(device)
        self.data = {}
        for k in KEYS:
            dtype = torch.bool if k == "terminals" else torch.float32
            self.data[k] = torch.as_tensor(np.asarray(transitions[k]), device=self.device).to(dtype)
        n = self.data["observations"].shape[0]
        for k in KEYS:
            if self.data[k].shape[0] != n:
                raise ValueError(f"transitions['{k}'] has {self.data[k].shape[0]} rows, observations have {n}")
        if n == 0:
            raise ValueError("no transitions to sample from")
        self.size, self.batch_size, self.seed = n, int(batch_size), int(seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def __len__(self) -> int:
        return self.size

    def sample(self) -> dict:
        idx = torch.randint(0, self.size, (self.batch_size,), generator=self.generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "device_type": self.device.type}

    def load_state_dict(self, state: dict) -> None:
        saved = state.get("device_type", self.device.type)
        if saved != self.device.type:
            # CPU and CUDA generators have different states (and streams): continue with a fresh, seeded stream
            import warnings

            warnings.warn(f"the batch sampler was saved on {saved} and resumes on {self.device.type}: its random stream "
                          "restarts, so this run will not match an uninterrupted one exactly", RuntimeWarning, stacklevel=2)
            self.generator.manual_seed(self.seed + 1)
            return
        self.generator.set_state(state["generator"])


class ReplayBuffer:
    """A fixed-capacity ring buffer of transitions for online SAC, stored as tensors on ``device``."""

    def __init__(self, state_dim: int, action_dim: int, capacity: int, device="cpu", seed: int = 0):
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.device, self.capacity = torch.device(device), int(capacity)
        f = dict(device=self.device, dtype=torch.float32)
        self.data = {"observations": torch.zeros(capacity, state_dim, **f), "actions": torch.zeros(capacity, action_dim, **f),
                     "rewards": torch.zeros(capacity, **f), "next_observations": torch.zeros(capacity, state_dim, **f),
                     "terminals": torch.zeros(capacity, dtype=torch.bool, device=self.device)}
        self.pos, self.size = 0, 0
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminal: bool) -> None:
        i = self.pos
        self.data["observations"][i] = torch.as_tensor(obs, dtype=torch.float32)
        self.data["actions"][i] = torch.as_tensor(action, dtype=torch.float32)
        self.data["rewards"][i] = float(reward)
        self.data["next_observations"][i] = torch.as_tensor(next_obs, dtype=torch.float32)
        self.data["terminals"][i] = bool(terminal)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dict:
        if self.size == 0:
            raise ValueError("the replay buffer is empty: add transitions before sampling")
        idx = torch.randint(0, self.size, (batch_size,), generator=self.generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {"data": {k: v[: self.size].cpu() for k, v in self.data.items()}, "pos": self.pos, "size": self.size,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for k, v in state["data"].items():
            self.data[k][:n] = v.to(self.device)
        self.pos, self.size = int(state["pos"]), n
        self.generator.set_state(state["generator"])
