"""Batches for training: uniform sampling from device-resident transitions (offline) and a ring buffer (online).

Both draw indices with their own ``torch.Generator`` on the data's device, so the sampler's state is one
tensor to checkpoint (``state_dict``) and a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch

from kfc_lite.validators import integer

__all__ = ["TransitionSampler", "ReplayBuffer"]

KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")


class TransitionSampler:
    """Minibatches from a fixed set of transitions, kept on ``device`` (float32; terminals bool).

    ``mode="epoch"`` (default) walks through shuffled passes over the data, as the authors' ``DataLoader`` with
    ``shuffle=True`` does; a pass ends when fewer than ``batch_size`` rows are left (those few wait for the next
    shuffle; the DataLoader would have served them as one short batch). ``mode="uniform"`` draws every batch
    with replacement, as rlkit's CQL and d3rlpy do. Indexing happens on the device, so no batch crosses the
    PCIe bus during training, and the state to checkpoint is the generator, the permutation and the cursor.
    """

    MODES = ("epoch", "uniform")

    def __init__(self, transitions: dict, batch_size: int, device="cpu", seed: int = 0, mode: str = "epoch"):
        missing = [k for k in KEYS if k not in transitions]
        if missing:
            raise KeyError(f"transitions need {list(KEYS)}; missing {missing} (use kfc_lite.data.qlearning_dataset)")
        if mode not in self.MODES:
            raise ValueError(
                f"mode must be 'epoch' (shuffled passes, the authors' loader) or 'uniform' (with "
                f"replacement), got {mode!r}"
            )
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
        if batch_size < 1 or (mode == "epoch" and batch_size > n):
            raise ValueError(
                f"batch_size must be between 1 and the number of transitions ({n}) for mode='epoch', "
                f"got {batch_size}; use a smaller batch or mode='uniform'"
            )
        self.size, self.batch_size, self.seed, self.mode = n, int(batch_size), int(seed), mode
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self._perm, self._cursor = None, 0

    def __len__(self) -> int:
        return self.size

    def _next_indices(self) -> torch.Tensor:
        if self.mode == "uniform":
            return torch.randint(0, self.size, (self.batch_size,), generator=self.generator, device=self.device)
        if self._perm is None or self._cursor + self.batch_size > self.size:
            self._perm = torch.randperm(self.size, generator=self.generator, device=self.device)
            self._cursor = 0
        idx = self._perm[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return idx

    def sample(self) -> dict:
        """A batch: the transitions' arrays at the drawn rows, and the rows themselves as ``indices`` (with
        which the Koopman augmenter gathers the rows of the dataset's symmetry table)."""
        idx = self._next_indices()
        batch = {k: v[idx] for k, v in self.data.items()}
        batch["indices"] = idx
        return batch

    def snapshot(self) -> tuple:
        """The sampler's position, cheaply (no copy of the permutation): ``state_dict(snapshot)`` later gives
        the state as of now. The permutation is replaced, never changed in place, so holding it is enough."""
        return self.generator.get_state(), self._perm, self._cursor

    def state_dict(self, snapshot: tuple | None = None) -> dict:
        """The state to checkpoint: as of now, or as of an earlier :meth:`snapshot`."""
        generator, perm, cursor = self.snapshot() if snapshot is None else snapshot
        return {
            "generator": generator,
            "device_type": self.device.type,
            "mode": self.mode,
            "perm": None if perm is None else perm.cpu(),
            "cursor": cursor,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("mode", self.mode) != self.mode:
            raise ValueError(f"the sampler state is for mode={state['mode']!r}, this sampler uses {self.mode!r}")
        saved = state.get("device_type", self.device.type)
        if saved != self.device.type:
            # CPU and CUDA generators have different states (and streams): continue with a fresh, seeded stream
            import warnings

            warnings.warn(
                f"the batch sampler was saved on {saved} and resumes on {self.device.type}: its random stream "
                "restarts, so this run will not match an uninterrupted one exactly",
                RuntimeWarning,
                stacklevel=2,
            )
            self.generator.manual_seed(self.seed + 1)
            self._perm, self._cursor = None, 0
            return
        self.generator.set_state(state["generator"])
        perm = state.get("perm")
        self._perm = None if perm is None else perm.to(self.device)
        self._cursor = int(state.get("cursor", 0))


class ReplayBuffer:
    """A fixed-capacity ring buffer of transitions for online SAC, stored as tensors on ``device``."""

    def __init__(self, state_dim: int, action_dim: int, capacity: int, device="cpu", seed: int = 0):
        integer("capacity", capacity, 1)
        self.device, self.capacity = torch.device(device), int(capacity)
        f = dict(device=self.device, dtype=torch.float32)
        self.data = {
            "observations": torch.zeros(capacity, state_dim, **f),
            "actions": torch.zeros(capacity, action_dim, **f),
            "rewards": torch.zeros(capacity, **f),
            "next_observations": torch.zeros(capacity, state_dim, **f),
            "terminals": torch.zeros(capacity, dtype=torch.bool, device=self.device),
        }
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
        return {
            "data": {k: v[: self.size].cpu() for k, v in self.data.items()},
            "pos": self.pos,
            "size": self.size,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for k, v in state["data"].items():
            self.data[k][:n] = v.to(self.device)
        self.pos, self.size = int(state["pos"]), n
        self.generator.set_state(state["generator"])
