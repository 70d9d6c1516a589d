"""The Koopman augmenter (KFC, KFC++): states moved along symmetries of a frozen Koopman model, S4RL noise otherwise.

:class:`KoopmanAugmenter` is the :class:`~kfc_lite.rl.plain_augment.Augmenter` of the methods "kfc" and "kfc++".
It reads the symmetries of a batch's rows from the dataset's symmetry table (:mod:`kfc_lite.symmetry_table`), or
builds them on the spot for a batch that does not come from a dataset, and decodes the moved latent states.

Its choice of branch (symmetry or noise) is drawn from its own host generator, so that choosing it never waits for
a GPU; every other draw comes from torch's global RNG, in the same order and size whatever the branch. The
generator's state is in :meth:`KoopmanAugmenter.state_dict`, so a training loop that checkpoints both resumes
exactly.

Sibling modules: :mod:`kfc_lite.rl.plain_augment` holds the base class and the model-free augmenters (none, S4RL
noise); :mod:`kfc_lite.rl.augment` is the front door, with :func:`~kfc_lite.rl.augment.make_augmenter`.
"""

from __future__ import annotations

import dataclasses

import torch

from kfc_lite.rl.plain_augment import S4RL_SIGMA, Augmenter, gaussian_noise
from kfc_lite.symmetry import DEFAULT_KFC_SCALE
from kfc_lite.symmetry_rows import SymmetryRows, TableSettings, build_rows, model_device_dtype, moved_latents
from kfc_lite.symmetry_table import SymmetryTable
from kfc_lite.validators import is_integer, number

__all__ = ["KoopmanAugmenter", "KFCPP_EPS_UNIT"]

#: KFC++'s per-dimension ``eps`` standard deviation at ``shift_sigma = 1`` (the authors' code).
KFCPP_EPS_UNIT = 3e-3
#: Added to ``torch.initial_seed()`` for the default seed of the Koopman augmenter's branch generator, so that its
#: stream is not the global RNG's own.
_BRANCH_SEED_OFFSET = 0x6B6663


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
    (:func:`~kfc_lite.symmetry_rows.build_rows`). Either way the step is the same: gather or build the rows,
    one small product with ``eps`` (:func:`~kfc_lite.symmetry_rows.moved_latents`), decode.

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
