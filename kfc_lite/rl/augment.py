"""State augmenters for offline RL: none (CQL), S4RL Gaussian noise, and the Koopman symmetries (KFC, KFC++).

One interface: ``augmenter(batch) -> batch`` on a dict of torch tensors with ``observations``, ``actions``,
``rewards``, ``next_observations``, ``terminals`` (and anything else, passed through). Only
``observations`` and ``next_observations`` change; actions, rewards and done flags stay as logged (paper
section 2 and open question 4; keeping the reward is the small-shift approximation of section 3 (d)).
Where the augmented states go (the critic's TD term and the data term of the CQL penalty, not the actor)
is the training loop's business.

Randomness comes from torch's global RNG on the batch's device, and every call draws the same tensors in
the same order whatever branch it takes. The one exception is the Koopman augmenter's choice of branch
(symmetry or noise), drawn from its own host generator so that it is known when a batch is drawn ahead of its
step (:meth:`KoopmanAugmenter.prepare`): a batch that will get noise is then never decomposed. Its state is in
:meth:`Augmenter.state_dict`, so a training loop that checkpoints both resumes exactly.
"""
from __future__ import annotations

import math
import numbers

import torch

from kfc_lite.symmetry import (DEFAULT_KFC_SCALE, Eigendecomposition, commutation_error, eigendecompose,
                               kfc_symmetry, kfcpp_symmetry)

__all__ = ["Augmenter", "NoAugmentation", "GaussianNoise", "KoopmanAugmenter", "PreparedOperators", "make_augmenter",
           "METHODS", "S4RL_SIGMA", "KFCPP_EPS_UNIT", "PREPARED_KEY"]

#: S4RL's Gaussian noise scale in raw state units (the authors' ``noise_sigma``, "paper S4RL").
S4RL_SIGMA = 3e-3
#: KFC++'s per-dimension ``eps`` standard deviation at ``shift_sigma = 1`` (the authors' code).
KFCPP_EPS_UNIT = 3e-3
#: Added to ``torch.initial_seed()`` for the default seed of the Koopman augmenter's branch generator, so that its
#: stream is not the global RNG's own.
_BRANCH_SEED_OFFSET = 0x6B6663

STATE_KEYS = ("observations", "next_observations")
#: The batch key under which :class:`kfc_lite.rl.lookahead.LookaheadSampler` hands a batch's
#: :class:`PreparedOperators` to the Koopman augmenter.
PREPARED_KEY = "koopman_prepared"


def _check_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(batch, dict):
        raise TypeError(f"a batch is a dict of torch tensors, got {type(batch).__name__}")
    missing = [k for k in STATE_KEYS if k not in batch]
    if missing:
        raise KeyError(f"the batch has no {missing}: an augmenter needs 'observations' and 'next_observations' "
                       f"(keys present: {sorted(batch)})")
    s, s_next = batch["observations"], batch["next_observations"]
    for name, x in zip(STATE_KEYS, (s, s_next)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"batch['{name}'] must be a torch tensor, got {type(x).__name__}; "
                            "convert with torch.as_tensor(x, device=...)")
        if x.ndim != 2 or not x.is_floating_point():
            raise ValueError(f"batch['{name}'] must be a floating-point tensor of shape (batch, state_dim), got "
                             f"{tuple(x.shape)} {x.dtype}")
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
            raise ValueError(f"{type(self).__name__} keeps no state, got one with {sorted(state)}: was it saved by "
                             "another method's augmenter?")

    def augment(self, batch: dict) -> dict:
        """A new dict: ``batch`` with ``observations`` and ``next_observations`` replaced, all else as is."""
        s, s_next = _check_batch(batch)
        with torch.no_grad():
            s_new, s_next_new = self._transform(s, s_next, batch)
        self._record(s, s_new, s_next, s_next_new)
        out = dict(batch)
        out.pop(PREPARED_KEY, None)  # used up: a further augmentation of the output draws its own branch
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
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be a finite non-negative number (raw state units), got {sigma!r}")
        self.sigma = float(sigma)
        super().__init__()

    def _transform(self, s, s_next, batch):
        return gaussian_noise(s, s_next, self.sigma)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma:g})"


def _decompose(K: torch.Tensor, cond_threshold, ready=None, pin: bool = False) -> Eigendecomposition:
    """A worker's job: wait for ``K`` to have landed on the host (``ready``: a CUDA event), decompose it on this
    thread, pin the results for an asynchronous copy back to the GPU."""
    if ready is not None:
        ready.synchronize()
    eig = eigendecompose(K, cond_threshold, exact_cond=False, split=False)
    return Eigendecomposition(*(x.pin_memory() for x in eig)) if pin else eig


class PreparedOperators:
    """One batch's branch draw, and where it drew the symmetry, ``K(a)`` for every row and the eigen-decomposition
    of those operators, started ahead of the batch's training step (:meth:`KoopmanAugmenter.prepare`).

    ``actions`` is the batch's own actions tensor (the augmenter checks it is handed the same object), ``use``
    the rows that take the symmetry branch ((B,) bool on the host), ``K`` the operators on the batch's device in
    the model's dtype, or None where no row takes the branch (nothing was computed); :meth:`eig` waits for the
    decomposition if a worker is still on it and returns it on the batch's device (None without ``K``).
    """

    __slots__ = ("actions", "use", "K", "owner", "used", "_future", "_eig", "_device")

    def __init__(self, actions: torch.Tensor, K: torch.Tensor | None, eig=None, future=None, owner=None,
                 use: torch.Tensor | None = None):
        if use is None:  # (made by hand for a batch that all takes the symmetry)
            use = torch.ones(actions.shape[0], dtype=torch.bool)
        if K is None and bool(use.any()):
            raise ValueError("PreparedOperators without K(a) are only for a batch where no row takes the symmetry")
        self.actions, self.use, self.K, self.owner, self._eig, self._future = actions, use, K, owner, eig, future
        self.used = False  # set by the augmentation that consumes it: a second one would reuse its branch draw
        self._device = None if K is None else K.device

    def eig(self) -> Eigendecomposition | None:
        if self.K is None:
            return None
        if self._eig is None:
            eig = self._future.result()
            if eig.values.device != self._device:  # decomposed on the host for a GPU batch (pinned: async copy)
                eig = Eigendecomposition(*(x.to(self._device, non_blocking=True) for x in eig))
            self._eig, self._future = eig, None
        return self._eig

    def done(self) -> bool:
        return self.K is None or self._eig is not None or self._future.done()

    def cancel(self) -> None:
        """Drop a decomposition not started yet (one already running finishes and is thrown away)."""
        if self._future is not None:
            self._future.cancel()


def _model_device_dtype(model):
    try:
        p = next(iter(model.parameters()))
    except (AttributeError, StopIteration):
        return None, None
    return p.device, p.dtype


class KoopmanAugmenter(Augmenter):
    """KFC / KFC++: move ``(s, s')`` along a symmetry of the frozen Koopman model, S4RL noise otherwise.

    For a sample taking the Koopman branch, with ``z = E(s)``, ``z' = E(s')`` and ``K = K(a)`` from the
    model (anything with ``encode``, ``decode`` and ``operator``)::

        sigma = Re(U diag(eps) U^-1),  eps_i ~ N(0, (3e-3 * shift_sigma)^2)   (variant "kfc++")
        sigma = eps * G(K),            eps   ~ N(0, shift_sigma^2)            (variant "kfc", G of RMS gain kfc_scale)
        s~  = D((I + sigma) z),   s~' = D((I + sigma) z')                     (the SAME sigma for both)

    and with ``gauged=True`` the residual form ``s~ = s + D((I + sigma) z) - D(z)`` (same for ``s'``), which
    keeps the autoencoder's reconstruction error out of the shift (paper open question 8; the authors'
    default is the plain decoded state).

    Parameters
    ----------
    variant : "kfc++" (n directions per action) or "kfc" (one).
    shift_sigma : the authors' ``shift_sigma`` (units: 3e-3 for KFC++, the generator's scale for KFC).
    p_koopman : probability of the Koopman branch; the rest get S4RL noise of ``noise_sigma``.
    per : "batch" draws ``u ~ U(0,1)`` once per batch and augments the whole batch by symmetry when
        ``u <= p_koopman`` (the authors' code); "sample" draws ``u`` per sample.
    seed : seed of the augmenter's own host generator for ``u`` (default: derived from torch's initial seed,
        ``torch.initial_seed()``, without drawing from the global RNG, so a run seeded with
        ``torch.manual_seed`` repeats and its networks start as a CQL run's of the same seed). ``u`` has its own
        stream so that :meth:`prepare` can draw it when a batch is drawn ahead of its step and skip the
        decomposition of a batch that will get noise (a fifth of them at ``p_koopman = 0.8``); every other
        draw (``eps``, the noise) comes from the global RNG in the step. :meth:`state_dict` holds the stream.
    cond_threshold : limit on ``cond(U)`` (default :func:`kfc_lite.symmetry.default_cond_threshold` of the
        eigen dtype); samples above it, or whose ``eig`` fails, fall back to S4RL noise and are counted in
        ``stats['fallback_rate']`` (the authors' code silently used ``U = I`` there, which does not commute).
    eig_dtype : dtype for the eigen-decomposition (default: the model's). In float32 the default condition
        limit is about 8.4e3; if ``stats['fallback_rate']`` is high, ``eig_dtype=torch.float64`` (limit 4.5e12)
        keeps more samples at a higher cost per batch.
    kfc_scale, kfc_seed : the KFC generator's RMS gain and the seed of its fixed reference matrix.
    bounds : optional ``(low, high)`` observation bounds (tensors or numbers broadcasting with a state);
        augmented states of both branches are clamped to them, as the authors' code clamps to the observation
        space. ``None`` (default) is the MuJoCo case, whose bounds are infinite.

    ``sync_free`` (attribute; default None = on CUDA only): where some rows drew the symmetry and some the noise
    (``per="sample"``), compute the symmetry for every row and pick with ``torch.where`` instead of selecting
    the rows that drew it (whose index would have to be copied to the GPU, and whose gathers and scatters are
    more launches). The values are the same; on the CPU the selecting form saves the work of the rows that
    drew noise. A batch where no row drew the symmetry does no Koopman work on either path.

    The model is frozen: it is put in eval mode here, and all its calls run under ``torch.no_grad()``.
    Symmetries are computed per batch on the batch's device (``torch.linalg.eig`` of the batch of
    ``K(a)``), never precomputed per transition: the model is frozen, so this gives the same generators
    without the authors' ~49 KB per transition of stored eigenvectors.
    :meth:`prepare` (used by :class:`kfc_lite.rl.lookahead.LookaheadSampler`) starts a batch's decomposition
    ahead of its step, on worker threads; the batch then carries it and the result is the same.
    """

    VARIANTS = ("kfc++", "kfc")
    PER = ("batch", "sample")

    def __init__(self, model, variant: str = "kfc++", shift_sigma: float = 1.0, p_koopman: float = 0.8,
                 per: str = "batch", gauged: bool = False, cond_threshold: float | None = None,
                 noise_sigma: float = S4RL_SIGMA, eig_dtype: torch.dtype | None = None,
                 kfc_scale: float = DEFAULT_KFC_SCALE, kfc_seed: int = 0, bounds=None, seed: int | None = None):
        for attr in ("encode", "decode", "operator"):
            if not callable(getattr(model, attr, None)):
                raise TypeError(f"the Koopman model must have encode(s), decode(z) and operator(a); "
                                f"{type(model).__name__} has no callable {attr!r}")
        variant = str(variant).lower()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {self.VARIANTS}, got {variant!r}")
        if per not in self.PER:
            raise ValueError(f"per must be 'batch' (one draw per batch, as the authors' code) or 'sample', got {per!r}")
        if not (isinstance(p_koopman, (int, float)) and 0.0 <= p_koopman <= 1.0):
            raise ValueError(f"p_koopman is a probability in [0, 1], got {p_koopman!r}")
        for name, value in (("shift_sigma", shift_sigma), ("noise_sigma", noise_sigma)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if cond_threshold is not None and not cond_threshold > 1:
            raise ValueError(f"cond_threshold must be > 1 (a condition number is at least 1), got {cond_threshold}")
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
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63) (the branch draw's generator), got {seed!r}")
        self.branch_generator = torch.Generator().manual_seed(int(seed))  # host: the branch is known without the device
        self.name = variant
        self.sync_free: bool | None = None
        self._bounds_cache: dict = {}
        super().__init__()

    def __repr__(self) -> str:
        return (f"KoopmanAugmenter(variant={self.variant!r}, shift_sigma={self.shift_sigma:g}, "
                f"p_koopman={self.p_koopman:g}, per={self.per!r}, gauged={self.gauged})")

    def state_dict(self) -> dict:
        """The branch draw's generator state (``eps`` and the noise come from torch's global RNG)."""
        return {"branch_generator": self.branch_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"an augmenter's state is the dict its state_dict() gave, got {type(state).__name__}")
        if "branch_generator" not in state:
            raise ValueError(f"a Koopman augmenter's state holds 'branch_generator' (from state_dict()), got the keys "
                             f"{sorted(state)}: was it saved by another method's augmenter?")
        g = state["branch_generator"]
        if not (isinstance(g, torch.Tensor) and g.dtype == torch.uint8 and g.device.type == "cpu"
                and g.shape == self.branch_generator.get_state().shape):
            raise ValueError("state['branch_generator'] is not a CPU generator state (a uint8 tensor of "
                             f"{tuple(self.branch_generator.get_state().shape)} from state_dict()), got "
                             f"{type(g).__name__} {tuple(getattr(g, 'shape', ()))}")
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

    def symmetries(self, K: torch.Tensor, eps: torch.Tensor, eig: Eigendecomposition | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sigma, valid)`` for a batch of operators ``K`` (B, n, n) and parameters ``eps``; ``eig``: a
        decomposition of ``K`` in the eigen dtype made earlier (:meth:`prepare`)."""
        eig_dtype = self.eig_dtype or K.dtype
        K_eig = K.to(eig_dtype)
        if eig is None:
            eig = self._decompose_now(K_eig)
        if self.variant == "kfc++":
            sigma, valid = kfcpp_symmetry(K_eig, eps.to(eig_dtype), eig=eig)
        else:
            sigma, valid = kfc_symmetry(K_eig, eps.to(eig_dtype), scale=self.kfc_scale, seed=self.kfc_seed, eig=eig)
        return sigma.to(K.dtype), valid

    def prepare(self, actions: torch.Tensor, executor=None) -> PreparedOperators:
        """The batch's branch draw and, unless every row drew the noise, ``K(a)`` of every row of ``actions`` now
        and their eigen-decomposition, on ``executor`` if given.

        Called by :class:`kfc_lite.rl.lookahead.LookaheadSampler` when it draws a batch, one or more steps
        before the batch is trained on, so that the decomposition (the cost of KFC/KFC++: LAPACK ``geev``, one
        32x32 matrix at a time, on the host even for a CUDA batch) runs on spare cores meanwhile, and only for
        the batches that will use it (the branch is drawn here, from :attr:`branch_generator`, in the order the
        batches will be trained on: the same draw the step would make). ``K`` is
        computed here, on the calling thread, exactly as :meth:`augment` would compute it, and the
        decomposition of each matrix is the same LAPACK call: a batch gives the same augmentation either way
        (tested). A CUDA batch's operators are copied to pinned host memory without blocking; the worker
        waits on a CUDA event for them, and its results go back to the GPU asynchronously in
        :meth:`PreparedOperators.eig`.
        """
        device, model_dtype = _model_device_dtype(self.model)
        if device is not None and device != actions.device:
            raise ValueError(f"the Koopman model is on {device} but the actions on {actions.device}: move the model "
                             f"with model.to({str(actions.device)!r})")
        before = self.branch_generator.get_state()
        use = self.draw_branch(actions.shape[0])
        if not bool(use.any()):  # the whole batch gets noise: nothing to decompose
            return PreparedOperators(actions, None, owner=self, use=use)
        if self.model.training:
            self.model.eval()
        try:
            with torch.no_grad():
                K = self.model.operator(actions.to(model_dtype) if model_dtype is not None else actions)
        except Exception:
            self.branch_generator.set_state(before)  # no batch was prepared: its branch is not drawn either
            raise
        K_eig = K.to(self.eig_dtype or K.dtype)
        if executor is None:
            return PreparedOperators(actions, K, eig=self._decompose_now(K_eig), owner=self, use=use)
        if K_eig.device.type == "cuda":
            with torch.cuda.device(K_eig.device):  # the copy and its event on the batch's device's stream
                host = torch.empty(K_eig.shape, dtype=K_eig.dtype, pin_memory=True)
                host.copy_(K_eig, non_blocking=True)
                ready = torch.cuda.Event()
                ready.record(torch.cuda.current_stream(K_eig.device))
            future = executor.submit(_decompose, host, self.cond_threshold, ready, True)
        else:
            future = executor.submit(_decompose, K_eig, self.cond_threshold)
        return PreparedOperators(actions, K, future=future, owner=self, use=use)

    def _decompose_now(self, K_eig: torch.Tensor) -> Eigendecomposition:
        """The decomposition on the calling thread: on the host for a CUDA batch too (what ``torch.linalg.eig``
        of a CUDA tensor does anyway, through MAGMA), with the same LAPACK call as a lookahead worker's, so a
        run takes the same steps with and without workers on either device."""
        if K_eig.device.type == "cuda":
            eig = _decompose(K_eig.cpu(), self.cond_threshold)
            return Eigendecomposition(*(x.to(K_eig.device) for x in eig))
        return eigendecompose(K_eig, self.cond_threshold, exact_cond=False)  # same mask, SVD only where needed

    def shift_states(self, s: torch.Tensor, s_next: torch.Tensor, sigma: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``D((I + sigma) E(x))`` for ``x`` in ``(s, s')`` with the same ``sigma`` (residual form if gauged)."""
        B = s.shape[0]
        z = self.model.encode(torch.cat([s, s_next], dim=0))
        sig = torch.cat([sigma, sigma], dim=0).to(z.dtype)
        z_new = z + (sig @ z.unsqueeze(-1)).squeeze(-1)
        x_new = self.model.decode(z_new)
        if self.gauged:
            x_new = torch.cat([s, s_next], dim=0) + x_new - self.model.decode(z)
        return x_new[:B], x_new[B:]

    def _bounds_on(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The bounds on ``device`` in ``dtype``, moved once (a host-to-GPU copy per batch would make the host wait)."""
        key = (torch.device(device), dtype)
        if key not in self._bounds_cache:
            self._bounds_cache[key] = tuple(b.to(device=device, dtype=dtype) for b in self.bounds)
        return self._bounds_cache[key]

    def _check_model_matches(self, s: torch.Tensor) -> None:
        device, _ = _model_device_dtype(self.model)
        if device is not None and device != s.device:
            raise ValueError(f"the Koopman model is on {device} but the batch on {s.device}: move the model with "
                             f"model.to({str(s.device)!r}) (the augmenter never copies data between devices)")
        state_dim = getattr(self.model, "state_dim", None)
        if state_dim is not None and s.shape[-1] != state_dim:
            raise ValueError(f"the batch has states of dimension {s.shape[-1]} but the Koopman model was built for "
                             f"{state_dim}: was it trained on another dataset?")

    def _transform(self, s, s_next, batch):
        if "actions" not in batch:
            raise KeyError("the Koopman augmenter needs batch['actions'] to build K(a)")
        a = batch["actions"]
        if not isinstance(a, torch.Tensor) or a.shape[0] != s.shape[0]:
            raise ValueError(f"batch['actions'] must be a tensor with {s.shape[0]} rows, got "
                             f"{getattr(a, 'shape', type(a).__name__)}")
        self._check_model_matches(s)
        prepared = batch.get(PREPARED_KEY)
        if prepared is not None and (not isinstance(prepared, PreparedOperators) or prepared.actions is not a
                                     or prepared.owner is not self):
            raise ValueError(f"batch['{PREPARED_KEY}'] must be the PreparedOperators made by this augmenter's prepare() "
                             "from this batch's own actions tensor (a batch changed after it was prepared, or "
                             "prepared by another augmenter?)")
        B, device = s.shape[0], s.device
        if prepared is not None:
            if tuple(prepared.use.shape) != (B,):
                raise ValueError(f"batch['{PREPARED_KEY}'] drew the branch for {tuple(prepared.use.shape)} rows, the "
                                 f"batch has {B}")
            if prepared.used:
                raise ValueError(f"batch['{PREPARED_KEY}'] was used by an earlier augmentation, with its branch draw: "
                                 "augment a batch once, or prepare it again")
            prepared.used = True
        if self.model.training:  # frozen: someone may have called .train() on it since
            self.model.eval()
        # The branch from the augmenter's own generator (drawn ahead by prepare() where the batch was), then, in a
        # fixed order and size whatever the branch (resumable RNG streams), eps and the noise from the global RNG.
        use = prepared.use if prepared is not None else self.draw_branch(B)  # (B,) bool, host
        _, model_dtype = _model_device_dtype(self.model)
        latent_dim = getattr(self.model, "latent_dim", None)
        if latent_dim is None:
            latent_dim = self.model.encode(s[:1].to(model_dtype or s.dtype)).shape[-1]
        eps = self.draw_eps(B, latent_dim, device, model_dtype or s.dtype)
        s_out, s_next_out = gaussian_noise(s, s_next, self.noise_sigma)

        n_drawn = int(use.sum())  # a host tensor: no device synchronisation
        cast = (lambda x: x.to(model_dtype)) if model_dtype is not None else (lambda x: x)
        sync_free = self.sync_free if self.sync_free is not None else device.type == "cuda"
        if n_drawn == 0:
            pass  # every row keeps its noise
        elif sync_free:
            # Every row through the symmetry, the branch chosen by torch.where: no indexing by rows, whose index
            # would have to reach the GPU. Same values as the branch below, which skips the work of the rows that
            # drew noise (tested).
            if prepared is None:
                K, eig = self.model.operator(cast(a)), None
            else:
                K, eig = prepared.K, prepared.eig()
            sigma, valid = self.symmetries(K, eps, eig=eig)
            take = valid if n_drawn == B else use.to(device, non_blocking=True) & valid
            n_take = take.sum()
            self._commutation.add(torch.where(take, commutation_error(sigma.double(), K.double()), 0.0), n_take)
            s_k, s_next_k = self.shift_states(cast(s), cast(s_next), sigma)
            s_out = torch.where(take[:, None], s_k.to(s.dtype), s_out)
            s_next_out = torch.where(take[:, None], s_next_k.to(s.dtype), s_next_out)
            self._koopman_used = self._koopman_used + n_take
        else:
            idx = torch.nonzero(use).squeeze(-1).to(device, non_blocking=True)
            if prepared is None:
                K, eig = self.model.operator(cast(a[idx])), None
            elif n_drawn == B:
                K, eig = prepared.K, prepared.eig()
            else:
                K, eig = prepared.K[idx], Eigendecomposition(*(x[idx] for x in prepared.eig()))
            sigma, valid = self.symmetries(K, eps[idx], eig=eig)
            n_valid = valid.sum()  # stays on the device: no synchronisation per batch
            self._commutation.add(torch.where(valid, commutation_error(sigma.double(), K.double()), 0.0), n_valid)
            s_k, s_next_k = self.shift_states(cast(s[idx]), cast(s_next[idx]), sigma)
            keep = valid[:, None]
            s_out[idx] = torch.where(keep, s_k.to(s.dtype), s_out[idx])
            s_next_out[idx] = torch.where(keep, s_next_k.to(s.dtype), s_next_out[idx])
            self._koopman_used = self._koopman_used + n_valid
        self._koopman_drawn += n_drawn
        if self.bounds is not None:
            low, high = self._bounds_on(device, s.dtype)
            s_out = torch.maximum(torch.minimum(s_out, high), low)
            s_next_out = torch.maximum(torch.minimum(s_next_out, high), low)
        return s_out, s_next_out


METHODS = ("cql", "s4rl", "kfc", "kfc++")


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
        raise ValueError(f"method {key!r} moves states along symmetries of a Koopman model: pass model=... "
                         "(train one with kfc_lite.koopman.fit_koopman, or load one with load_koopman)")
    return KoopmanAugmenter(model, variant=key, **kwargs)
