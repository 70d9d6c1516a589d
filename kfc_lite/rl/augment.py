"""State augmenters for offline RL: none (CQL), S4RL Gaussian noise, and the Koopman symmetries (KFC, KFC++).

One interface: ``augmenter(batch) -> batch`` on a dict of torch tensors with ``observations``, ``actions``,
``rewards``, ``next_observations``, ``terminals`` and, for a batch drawn from a dataset, ``indices`` (its rows in
that dataset, with which the Koopman augmenter reads the dataset's symmetry table; other keys pass through). A
training step is ``augmented = augmenter(batch)`` then ``agent.update(batch, augmented)``; plain CQL's augmenter
is :class:`NoAugmentation`. Only
``observations`` and ``next_observations`` change; actions, rewards and done flags stay as logged (docs/paper.md,
'Where augmented states go'; keeping the reward is the small-shift approximation of the paper's section 3).
Where the augmented states go (the critic's TD term and the data term of the CQL penalty, not the actor)
is the training loop's business.

Randomness comes from torch's global RNG on the batch's device, and every call draws the same tensors in
the same order whatever branch it takes. The one exception is the Koopman augmenter's choice of branch
(symmetry or noise), drawn from its own host generator, so that choosing it never waits for a GPU. Its state is
in :meth:`Augmenter.state_dict`, so a training loop that checkpoints both resumes exactly.
"""

from __future__ import annotations

import dataclasses

import torch

from kfc_lite.methods import METHODS
from kfc_lite.symmetry import DEFAULT_KFC_SCALE
from kfc_lite.symmetry_table import (
    SymmetryRows,
    SymmetryTable,
    TableSettings,
    build_rows,
    model_device_dtype,
    moved_latents,
)
from kfc_lite.validators import is_integer, number

__all__ = [
    "Augmenter",
    "NoAugmentation",
    "GaussianNoise",
    "KoopmanAugmenter",
    "make_augmenter",
    "METHODS",
    "S4RL_SIGMA",
    "KFCPP_EPS_UNIT",
]

#: S4RL's Gaussian noise scale in raw state units (the authors' ``noise_sigma``, "paper S4RL").
S4RL_SIGMA = 3e-3
#: KFC++'s per-dimension ``eps`` standard deviation at ``shift_sigma = 1`` (the authors' code).
KFCPP_EPS_UNIT = 3e-3
#: Added to ``torch.initial_seed()`` for the default seed of the Koopman augmenter's branch generator, so that its
#: stream is not the global RNG's own.
_BRANCH_SEED_OFFSET = 0x6B6663

STATE_KEYS = ("observations", "next_observations")


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict):
        raise TypeError(f"a batch is a dict of torch tensors, got {type(batch).__name__}")
    missing = [k for k in STATE_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"the batch has no {missing}: an augmenter needs 'observations' and 'next_observations' "
            f"(keys present: {sorted(batch)})"
        )
    s, s_next = batch["observations"], batch["next_observations"]
    for name, x in zip(STATE_KEYS, (s, s_next), strict=False):
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"batch['{name}'] must be a torch tensor, got {type(x).__name__}; "
                "convert with torch.as_tensor(x, device=...)"
            )
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(
                f"batch['{name}'] must be a floating-point tensor of shape (batch, state_dim), got "
                f"{tuple(x.shape)} {x.dtype}"
            )
    if s.shape != s_next.shape:
        raise ValueError(f"observations {tuple(s.shape)} and next_observations {tuple(s_next.shape)} differ in shape")
    if s.device != s_next.device:
        raise ValueError(f"observations are on {s.device} but next_observations on {s_next.device}")
    return s, s_next


class _RunningMean:
    """A running mean whose sums stay on the tensors' device: adding never waits for the GPU; reading does."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def add(self, values: torch.Tensor, count=None) -> None:
        """Add ``values.sum()``; ``count`` (an int or a device tensor) defaults to ``values.numel()``."""
        self.total = self.total + values.detach().double().sum()
        self.count = self.count + (values.numel() if count is None else count)

    @property
    def mean(self) -> float:
        count = float(self.count)
        return float(self.total) / count if count else float("nan")


class Augmenter:
    """Base class: ``augment(batch) -> batch`` (also ``augmenter(batch)``), running ``stats``, ``reset_stats()``.

    ``stats`` (running since the last reset): ``batches``, ``samples``, ``state_shift`` (mean Euclidean
    norm of ``s~ - s`` over all samples), ``next_state_shift`` (same for ``s'``), ``koopman_fraction``
    (share of samples moved by a symmetry), ``fallback_rate`` (share of the samples that drew the Koopman
    branch but fell back to noise because their eigen-decomposition failed the guard) and
    ``commutation_error`` (mean relative commutator of the symmetries used).
    """

    name = "base"

    def __init__(self):
        self.reset_stats()

    def reset_stats(self) -> None:
        self._batches = 0
        self._samples = 0
        self._koopman_drawn = 0
        self._koopman_used = 0
        self._shift = _RunningMean()
        self._next_shift = _RunningMean()
        self._commutation = _RunningMean()

    @property
    def stats(self) -> dict:
        drawn = int(self._koopman_drawn)
        used = int(self._koopman_used)
        return {
            "batches": self._batches,
            "samples": self._samples,
            "state_shift": self._shift.mean,
            "next_state_shift": self._next_shift.mean,
            "koopman_fraction": used / self._samples if self._samples else float("nan"),
            "fallback_rate": (drawn - used) / drawn if drawn else 0.0,
            "fallbacks": drawn - used,
            "commutation_error": self._commutation.mean,
        }

    def _record(self, s, s_new, s_next, s_next_new) -> None:
        self._batches += 1
        self._samples += s.shape[0]
        self._shift.add(torch.linalg.vector_norm((s_new - s).detach(), dim=-1))
        self._next_shift.add(torch.linalg.vector_norm((s_next_new - s_next).detach(), dim=-1))

    def _transform(self, s: torch.Tensor, s_next: torch.Tensor, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The state a resumed run needs beyond torch's global RNG: none here (see :class:`KoopmanAugmenter`)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"an augmenter's state is the dict its state_dict() gave, got {type(state).__name__}")
        if state:
            raise ValueError(
                f"{type(self).__name__} keeps no state, got one with {sorted(state)}: was it saved by "
                "another method's augmenter?"
            )

    def augment(self, batch: dict) -> dict:
        """A new dict: ``batch`` with ``observations`` and ``next_observations`` replaced, all else as is."""
        s, s_next = _check_batch(batch)
        with torch.no_grad():
            s_new, s_next_new = self._transform(s, s_next, batch)
        self._record(s, s_new, s_next, s_next_new)
        out = dict(batch)
        out["observations"], out["next_observations"] = s_new, s_next_new
        return out

    __call__ = augment

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAugmentation(Augmenter):
    """Plain CQL: the batch unchanged (a new dict holding the same tensors)."""

    name = "none"

    def _transform(self, s, s_next, batch):
        return s, s_next


def gaussian_noise(s: torch.Tensor, s_next: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """S4RL noise: ``s + N(0, sigma^2)`` and ``s' + N(0, sigma^2)`` with *independent* draws (as the authors'
    CQL-Noise baseline does; it is not a transition of the system, only a neighbourhood of the data)."""
    return s + sigma * torch.randn_like(s), s_next + sigma * torch.randn_like(s_next)


class GaussianNoise(Augmenter):
    """S4RL-N: independent zero-mean Gaussian noise on ``s`` and ``s'`` (``sigma`` in raw state units)."""

    name = "s4rl"

    def __init__(self, sigma: float = S4RL_SIGMA):
        self.sigma = number("sigma (raw state units)", sigma, 0.0)
        super().__init__()

    def _transform(self, s, s_next, batch):
        return gaussian_noise(s, s_next, self.sigma)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:g})"


class KoopmanAugmenter(Augmenter):
    """KFC / KFC++: move ``(s, s')`` along a symmetry of the frozen Koopman model, S4RL noise otherwise.

    For a sample taking the Koopman branch, with ``z = E(s)``, ``z' = E(s')`` and ``K = K(a)`` from the
    model (anything with ``encode``, ``decode`` and ``operator``)::

        sigma = Re(U diag(eps) U^-1),  eps_i ~ N(0, (3e-3 * shift_sigma)^2)   (variant "kfc++")
        sigma = eps * G(K),            eps   ~ N(0, shift_sigma^2)            (variant "kfc", G of RMS gain kfc_scale)
        s~  = D((I + sigma) z),   s~' = D((I + sigma) z')                     (the SAME sigma for both)

    and with ``gauged=True`` the residual form ``s~ = s + D((I + sigma) z) - D(z)`` (same for ``s'``), which
    keeps the autoencoder's reconstruction error out of the shift (the authors' default is the plain decoded
    state).

    Where the symmetries come from: ``sigma`` depends only on the frozen model and the logged action, so what a
    row needs is computed once per dataset, in a :class:`~kfc_lite.symmetry_table.SymmetryTable` (``table=``),
    and a batch that carries its rows' ``indices`` into that dataset gathers them. A batch without indices (a
    notebook's, a test's) gets its rows computed on the spot by the same code
    (:func:`~kfc_lite.symmetry_table.build_rows`). Either way the step is the same: gather or build the rows,
    one small product with ``eps`` (:func:`~kfc_lite.symmetry_table.moved_latents`), decode.

    Parameters
    ----------
    variant : "kfc++" (n directions per action) or "kfc" (one).
    shift_sigma : the authors' ``shift_sigma`` (units: 3e-3 for KFC++, the generator's scale for KFC).
    p_koopman : probability of the Koopman branch; the rest get S4RL noise of ``noise_sigma``.
    per : "batch" draws ``u ~ U(0,1)`` once per batch and augments the whole batch by symmetry when
        ``u <= p_koopman`` (the authors' code); "sample" draws ``u`` per sample.
    seed : seed of the augmenter's own host generator for ``u`` (default: derived from torch's initial seed,
        ``torch.initial_seed()``, without drawing from the global RNG, so a run seeded with
        ``torch.manual_seed`` repeats and its networks start as a CQL run's of the same seed). Every other draw
        (``eps``, the noise) comes from the global RNG, in the same order and size whatever the branch.
        :meth:`state_dict` holds the stream.
    cond_threshold : limit on ``cond(U)`` (default :func:`kfc_lite.symmetry.default_cond_threshold` of the
        eigen dtype); samples above it, or whose ``eig`` fails, fall back to S4RL noise and are counted in
        ``stats['fallback_rate']`` (the authors' code silently used ``U = I`` there, which does not commute).
    eig_dtype : dtype for the eigen-decomposition (default: the model's). In float32 the default condition
        limit is about 8.4e3; if ``stats['fallback_rate']`` is high, ``eig_dtype=torch.float64`` (limit 4.5e12)
        keeps more samples.
    kfc_scale, kfc_seed : the KFC generator's RMS gain and the seed of its fixed reference matrix.
    bounds : optional ``(low, high)`` observation bounds (tensors or numbers broadcasting with a state);
        augmented states of both branches are clamped to them, as the authors' code clamps to the observation
        space. ``None`` (default) is the MuJoCo case, whose bounds are infinite.
    table : the dataset's :class:`~kfc_lite.symmetry_table.SymmetryTable`, built with this augmenter's
        :attr:`table_settings` (checked).

    The model is frozen: it is put in eval mode here, and all its calls run under ``torch.no_grad()``.
    """

    VARIANTS = ("kfc++", "kfc")
    PER = ("batch", "sample")

    def __init__(
        self,
        model,
        variant: str = "kfc++",
        shift_sigma: float = 1.0,
        p_koopman: float = 0.8,
        per: str = "batch",
        gauged: bool = False,
        cond_threshold: float | None = None,
        noise_sigma: float = S4RL_SIGMA,
        eig_dtype: torch.dtype | None = None,
        kfc_scale: float = DEFAULT_KFC_SCALE,
        kfc_seed: int = 0,
        bounds=None,
        seed: int | None = None,
        table: SymmetryTable | None = None,
    ):
        for attr in ("encode", "decode", "operator"):
            if not callable(getattr(model, attr, None)):
                raise TypeError(
                    f"the Koopman model must have encode(s), decode(z) and operator(a); "
                    f"{type(model).__name__} has no callable {attr!r}"
                )
        variant = str(variant).lower()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        if per not in self.PER:
            raise ValueError(f"per must be 'batch' (one draw per batch, as the authors' code) or 'sample', got {per!r}")
        number("p_koopman (a probability)", p_koopman, 0.0, 1.0)
        number("shift_sigma", shift_sigma, 0.0)
        number("noise_sigma", noise_sigma, 0.0)
        if cond_threshold is not None and not cond_threshold > 1:
            raise ValueError(f"cond_threshold must be > 1 (a condition number is at least 1), got {cond_threshold}")
        if eig_dtype is not None and eig_dtype not in (torch.float32, torch.float64):
            raise ValueError(f"eig_dtype must be torch.float32 or torch.float64, got {eig_dtype!r}")
        self.model = model
        if hasattr(model, "eval"):
            model.eval()
        self.variant, self.shift_sigma, self.p_koopman, self.per = variant, float(shift_sigma), float(p_koopman), per
        self.gauged, self.cond_threshold, self.noise_sigma = bool(gauged), cond_threshold, float(noise_sigma)
        self.eig_dtype, self.kfc_scale, self.kfc_seed = eig_dtype, float(kfc_scale), int(kfc_seed)
        if bounds is not None:
            if not (isinstance(bounds, (tuple, list)) and len(bounds) == 2):
                raise ValueError("bounds must be a pair (low, high) of numbers or tensors, or None")
            low, high = (torch.as_tensor(b, dtype=torch.float64) for b in bounds)
            if (low > high).any():
                raise ValueError("bounds: low must not exceed high in any dimension")
            bounds = (low, high)
        self.bounds = bounds
        if seed is None:
            seed = (torch.initial_seed() + _BRANCH_SEED_OFFSET) % 2**63
        if not (is_integer(seed) and 0 <= seed < 2**63):
            raise ValueError(f"seed must be an integer in [0, 2**63) (the branch draw's generator), got {seed!r}")
        self.branch_generator = torch.Generator().manual_seed(int(seed))  # host: no device sync for the branch
        self.name = variant
        self._bounds_cache: dict = {}
        self.table = None
        if table is not None:
            self.use_table(table)
        super().__init__()

    def __repr__(self) -> str:
        return (
            f"KoopmanAugmenter(variant={self.variant!r}, shift_sigma={self.shift_sigma:g}, "
            f"p_koopman={self.p_koopman:g}, per={self.per!r}, gauged={self.gauged}"
            f"{f', table of {len(self.table)} rows' if self.table is not None else ''})"
        )

    @property
    def table_settings(self) -> TableSettings:
        """The settings a table for this augmenter is built with."""
        _, model_dtype = model_device_dtype(self.model)
        eig_dtype = self.eig_dtype or model_dtype or torch.float32
        return TableSettings(
            variant=self.variant,
            cond_threshold=self.cond_threshold,
            eig_dtype=str(eig_dtype).removeprefix("torch."),
            kfc_scale=self.kfc_scale,
            kfc_seed=self.kfc_seed,
            storage=self.table.settings.storage if self.table else "float32",
        )

    def use_table(self, table: SymmetryTable) -> None:
        """Gather rows from ``table`` for batches that carry ``indices`` (a table of the same settings)."""
        if not isinstance(table, SymmetryTable):
            raise TypeError(f"table must be a SymmetryTable (kfc_lite.symmetry_table), got {type(table).__name__}")
        mine = dataclasses.replace(self.table_settings, storage=table.settings.storage)
        if table.settings != mine:
            raise ValueError(
                f"the symmetry table was built with {table.settings}, but this augmenter needs {mine}: "
                "build the table from the augmenter's table_settings"
            )
        self.table = table

    def state_dict(self) -> dict:
        """The branch draw's generator state (``eps`` and the noise come from torch's global RNG)."""
        return {"branch_generator": self.branch_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"an augmenter's state is the dict its state_dict() gave, got {type(state).__name__}")
        if "branch_generator" not in state:
            raise ValueError(
                f"a Koopman augmenter's state holds 'branch_generator' (from state_dict()), got the keys "
                f"{sorted(state)}: was it saved by another method's augmenter?"
            )
        g = state["branch_generator"]
        if not (
            isinstance(g, torch.Tensor)
            and g.dtype == torch.uint8
            and g.device.type == "cpu"
            and g.shape == self.branch_generator.get_state().shape
        ):
            raise ValueError(
                "state['branch_generator'] is not a CPU generator state (a uint8 tensor of "
                f"{tuple(self.branch_generator.get_state().shape)} from state_dict()), got "
                f"{type(g).__name__} {tuple(getattr(g, 'shape', ()))}"
            )
        self.branch_generator.set_state(g)

    # -- the pieces, each usable on its own (the notebook and the explorer call them) -----------------
    def draw_branch(self, batch_size: int) -> torch.Tensor:
        """Which rows take the symmetry branch: (B,) bool on the host, from the augmenter's own generator."""
        if self.per == "batch":
            u = torch.rand(1, generator=self.branch_generator)
            return (u <= self.p_koopman).expand(batch_size)
        return torch.rand(batch_size, generator=self.branch_generator) <= self.p_koopman

    def draw_eps(self, batch_size: int, latent_dim: int, device, dtype) -> torch.Tensor:
        """The symmetry parameters: (B, n) for KFC++, (B,) for KFC, from the global RNG."""
        if self.variant == "kfc++":
            return torch.randn(batch_size, latent_dim, device=device, dtype=dtype) * (KFCPP_EPS_UNIT * self.shift_sigma)
        return torch.randn(batch_size, device=device, dtype=dtype) * self.shift_sigma

    def rows(self, batch: dict) -> SymmetryRows:
        """The batch's symmetry rows: gathered from the table by ``batch["indices"]``, or built now."""
        s, a, s_next = batch["observations"], batch["actions"], batch["next_observations"]
        _, model_dtype = model_device_dtype(self.model)
        dtype = model_dtype or s.dtype
        if self.table is not None and "indices" in batch:
            return self.table.rows(batch["indices"], device=s.device, dtype=dtype)
        return build_rows(self.model, s.to(dtype), a.to(dtype), s_next.to(dtype), self.table_settings)

    def _bounds_on(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds on ``device`` in ``dtype``, moved once (a host-to-GPU copy per batch would make the host wait)."""
        key = (torch.device(device), dtype)
        if key not in self._bounds_cache:
            self._bounds_cache[key] = tuple(b.to(device=device, dtype=dtype) for b in self.bounds)
        return self._bounds_cache[key]

    def _check_model_matches(self, s: torch.Tensor) -> None:
        device, model_dtype = model_device_dtype(self.model)
        if model_dtype is not None and device != s.device:
            raise ValueError(
                f"the Koopman model is on {device} but the batch on {s.device}: move the model with "
                f"model.to({str(s.device)!r}) (the augmenter never copies data between devices)"
            )
        state_dim = getattr(self.model, "state_dim", None)
        if state_dim is not None and s.shape[-1] != state_dim:
            raise ValueError(
                f"the batch has states of dimension {s.shape[-1]} but the Koopman model was built for "
                f"{state_dim}: was it trained on another dataset?"
            )

    def _transform(self, s, s_next, batch):
        if "actions" not in batch:
            raise KeyError("the Koopman augmenter needs batch['actions'] to build K(a)")
        a = batch["actions"]
        if not isinstance(a, torch.Tensor) or a.shape[0] != s.shape[0]:
            raise ValueError(
                f"batch['actions'] must be a tensor with {s.shape[0]} rows, got {getattr(a, 'shape', type(a).__name__)}"
            )
        self._check_model_matches(s)
        if self.model.training:  # frozen: someone may have called .train() on it since
            self.model.eval()
        B, device = s.shape[0], s.device
        _, model_dtype = model_device_dtype(self.model)
        dtype = model_dtype or s.dtype
        # The branch from the augmenter's own generator, then, in a fixed order and size whatever the branch
        # (resumable RNG streams), eps and the noise from the global RNG.
        use = self.draw_branch(B)  # (B,) bool, host
        latent_dim = getattr(self.model, "latent_dim", None)
        if latent_dim is None:
            latent_dim = self.model.encode(s[:1].to(dtype)).shape[-1]
        eps = self.draw_eps(B, latent_dim, device, dtype)
        s_out, s_next_out = gaussian_noise(s, s_next, self.noise_sigma)

        n_drawn = int(use.sum())  # a host tensor: no device synchronisation
        if n_drawn:
            rows = self.rows(batch)
            moved = self.model.decode(moved_latents(rows, eps))  # (B, 2, d_s)
            if self.gauged:  # keep the reconstruction error E -> D out of the shift
                moved = torch.stack([s, s_next], dim=1).to(dtype) + moved - self.model.decode(rows.latent)
            take = rows.valid if n_drawn == B else use.to(device, non_blocking=True) & rows.valid
            n_take = take.sum()  # stays on the device: no synchronisation per batch
            self._commutation.add(torch.where(take, rows.commutation.double(), 0.0), n_take)
            s_out = torch.where(take[:, None], moved[:, 0].to(s.dtype), s_out)
            s_next_out = torch.where(take[:, None], moved[:, 1].to(s.dtype), s_next_out)
            self._koopman_used = self._koopman_used + n_take
        self._koopman_drawn += n_drawn
        if self.bounds is not None:
            low, high = self._bounds_on(device, s.dtype)
            s_out = torch.maximum(torch.minimum(s_out, high), low)
            s_next_out = torch.maximum(torch.minimum(s_next_out, high), low)
        return s_out, s_next_out


def make_augmenter(method: str, model=None, **kwargs) -> Augmenter:
    """The augmenter of a method: "cql" (none), "s4rl" (Gaussian noise), "kfc" or "kfc++" (needs ``model``).

    ``kwargs`` go to the augmenter's constructor (``sigma`` for S4RL; ``shift_sigma``, ``p_koopman``, ``per``,
    ``gauged``, ... for KFC and KFC++).
    """
    key = str(method).strip().lower()
    if key not in METHODS:
        raise ValueError(f"unknown augmentation method {method!r}: choose one of {METHODS}")
    if key == "cql":
        if kwargs:
            raise TypeError(f"method 'cql' uses no augmentation and takes no options, got {sorted(kwargs)}")
        return NoAugmentation()
    if key == "s4rl":
        return GaussianNoise(**kwargs)
    if model is None:
        raise ValueError(
            f"method {key!r} moves states along symmetries of a Koopman model: pass model=... "
            "(train one with kfc_lite.koopman.fit_koopman, or load one with load_koopman)"
        )
    return KoopmanAugmenter(model, variant=key, **kwargs)
