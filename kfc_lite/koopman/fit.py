"""Training the Koopman forward model (docs/paper.md, 'The Koopman forward model'; the authors' ``main_kfc.py``).

The loss is one-step only, with no latent-consistency and no multi-step term:

    L = Huber( D(K(a_t) E(s_t)), s_{t+1} ) + 10 * Huber( D(E(x~)), x~ ),   x~ = x + N(0, 0.06^2),  x in [s_t; s_{t+1}]

Schedule: a seeded 70/30 train/validation split, Adam (lr 3e-4, batch 256), the learning rate halved and the
optimiser re-created at epochs 101, 151, 201, ... (``epoch % 50 == 1``), at most 400 epochs, and early stopping
from epoch 75 on the train/validation loss ratios averaged over the last 5 epochs.

Multi-step prediction error on validation segments is logged every epoch as a diagnostic; it does not enter
the loss (the paper trains one step only).

Pre-training on a full D4RL dataset takes a while, so :func:`fit_koopman` can keep a checkpoint (``checkpoint=``):
the model, Adam, the learning rate, the minibatch generator and the history after every ``checkpoint_every``
epochs, verified and kept in pairs (:mod:`kfc_lite.files`). Called again with the same checkpoint, the same data
and the same config, it continues from the last saved epoch and ends with bit-exactly the model of an
uninterrupted fit (on one device with one thread count).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kfc_lite.koopman.model import KoopmanForwardModel
from kfc_lite.settings import release_cpu_memory, resolve_device, tune_cpu_allocator

REQUIRED_KEYS = ("observations", "actions", "next_observations", "terminals")
PRETRAINING_FORMAT = "kfc-lite-koopman-pretraining"


@dataclass
class KoopmanTrainConfig:
    """Every number of the paper's Koopman pre-training, as a default. Validated on creation.

    ``max_steps`` and ``max_epochs`` cap a run (quick mode, tests); ``early_stopping=False`` turns the paper's
    ratio rule off. ``multistep_k`` is the horizon of the logged validation multi-step error, and the length
    of the contiguous segments the split keeps together (see :func:`split_indices`).
    """

    latent_dim: int = 32
    hidden_dim: int = 512
    batch_size: int = 256
    lr: float = 3e-4
    recon_weight: float = 10.0
    noise_std: float = 0.06
    train_fraction: float = 0.7
    seed: int = 0
    max_epochs: int = 400
    max_steps: int | None = None
    lr_decay_start: int = 101
    lr_decay_every: int = 50
    lr_decay_factor: float = 0.5
    early_stopping: bool = True
    early_stop_start: int = 75
    early_stop_window: int = 5
    #: stop when (recon ratio <= a and forward ratio <= b), or forward ratio <= c, or recon ratio <= d
    stop_recon_and_forward: tuple = (0.90, 0.92)
    stop_forward: float = 0.90
    stop_recon: float = 0.90
    multistep_k: int = 10
    #: opt-in extension, NOT in the paper (docs/paper.md, 'The Koopman forward model'): weight of
    #: Huber(K(a) E(s), E(s')). 0 (the paper) leaves K(a) free wherever the decoder does not look, which spoils
    #: open-loop rollouts.
    latent_weight: float = 0.0
    #: at most this many validation segments enter the logged multi-step error (it is a diagnostic, keep it cheap)
    multistep_max_segments: int = 512
    split_by_segments: bool = True

    def __post_init__(self):
        def positive_int(name, allow_none=False):
            v = getattr(self, name)
            if allow_none and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(
                    f"KoopmanTrainConfig.{name} must be a positive integer{' or None' if allow_none else ''}, got {v!r}"
                )

        for name in (
            "latent_dim",
            "hidden_dim",
            "batch_size",
            "max_epochs",
            "lr_decay_start",
            "lr_decay_every",
            "early_stop_start",
            "early_stop_window",
            "multistep_k",
            "multistep_max_segments",
        ):
            positive_int(name)
        positive_int("max_steps", allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"KoopmanTrainConfig.seed must be a non-negative integer, got {self.seed!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"KoopmanTrainConfig.lr must be a positive number, got {self.lr!r} (the paper uses 3e-4)")
        if not (math.isfinite(self.recon_weight) and self.recon_weight >= 0):
            raise ValueError(
                f"KoopmanTrainConfig.recon_weight must be >= 0, got {self.recon_weight!r} (the paper uses 10)"
            )
        if not (math.isfinite(self.latent_weight) and self.latent_weight >= 0):
            raise ValueError(
                f"KoopmanTrainConfig.latent_weight must be >= 0, got {self.latent_weight!r} (0 = the paper's loss)"
            )
        if not (math.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"KoopmanTrainConfig.noise_std must be >= 0, got {self.noise_std!r} (the paper uses 0.06)")
        if not (0 < self.train_fraction < 1):
            raise ValueError(
                f"KoopmanTrainConfig.train_fraction must lie strictly between 0 and 1, got {self.train_fraction!r} "
                "(the paper uses 0.7: a validation set is needed for early stopping)"
            )
        if not (0 < self.lr_decay_factor <= 1):
            raise ValueError(f"KoopmanTrainConfig.lr_decay_factor must lie in (0, 1], got {self.lr_decay_factor!r}")
        ratios = [*self.stop_recon_and_forward, self.stop_forward, self.stop_recon]
        if len(self.stop_recon_and_forward) != 2 or not all(0 < r <= 1.5 for r in ratios):
            raise ValueError(
                f"KoopmanTrainConfig stopping ratios must be positive and near 1, got "
                f"stop_recon_and_forward={self.stop_recon_and_forward}, stop_forward={self.stop_forward}, "
                f"stop_recon={self.stop_recon}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# -- losses -----------------------------------------------------------------------------------------------------
def huber(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PyTorch's ``smooth_l1_loss`` with beta 1, the mean over all elements: the paper's "Huber"."""
    return F.smooth_l1_loss(prediction, target, beta=1.0)


def prediction_loss(model: KoopmanForwardModel, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor) -> torch.Tensor:
    """Decoded one-step prediction: ``Huber(D(K(a) E(s)), s')``."""
    return huber(model(s, a), s_next)


def reconstruction_loss(
    model: KoopmanForwardModel,
    s: torch.Tensor,
    s_next: torch.Tensor,
    noise_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Auto-encoding of jittered states: ``Huber(D(E(x~)), x~)`` with ``x~ = [s; s'] + N(0, noise_std^2)``.

    The target is the jittered input itself, not the clean state (as in the original code): the noise
    makes the auto-encoder cover a neighbourhood of the data, which is where the symmetry-shifted states of
    KFC will land, rather than denoise.
    """
    x = torch.cat([s, s_next], dim=0)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_tilde = x + noise_std * noise
    return huber(model.decode(model.encode(x_tilde)), x_tilde)


def latent_consistency_loss(
    model: KoopmanForwardModel, s: torch.Tensor, a: torch.Tensor, s_next: torch.Tensor
) -> torch.Tensor:
    """``Huber(K(a) E(s), E(s'))``: an opt-in extension, not part of the paper's objective.

    The paper's loss only asks that ``D(K(a) E(s))`` be right; ``K(a) E(s)`` may land anywhere the decoder maps
    to ``s'``, including off the set of encoded states, so a second application of ``K`` is never trained.
    This term asks the latent itself to evolve linearly, which is what multi-step rollouts need.
    """
    return huber(model.latent_step(model.encode(s), a), model.encode(s_next))


def koopman_loss(model, s, a, s_next, config: KoopmanTrainConfig, generator=None):
    """The training objective, and its two parts (forward, reconstruction) as floats for logging."""
    forward = prediction_loss(model, s, a, s_next)
    recon = reconstruction_loss(model, s, s_next, config.noise_std, generator)
    total = forward + config.recon_weight * recon
    if config.latent_weight > 0:
        total = total + config.latent_weight * latent_consistency_loss(model, s, a, s_next)
    return total, forward.detach(), recon.detach()


# -- data ---------------------------------------------------------------------------------------------------
def _as_numpy(name, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def validate_transitions(transitions: dict) -> dict:
    """Check the transitions dict and return NumPy arrays; raise a clear error on anything off.

    Needed: ``observations`` (N, d_s), ``actions`` (N, d_a), ``next_observations`` (N, d_s), ``terminals`` (N,).
    Optional: ``timeouts`` (N,), ``episode_starts`` (N,). All finite, all with the same N.
    """
    if not isinstance(transitions, dict):
        raise TypeError(f"transitions must be a dict with keys {REQUIRED_KEYS}, got {type(transitions).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in transitions]
    if missing:
        raise KeyError(
            f"transitions lack {missing}: a dict with {list(REQUIRED_KEYS)} is needed "
            "(d4rl.qlearning_dataset and kfc_lite.koopman.gym_transitions give one)"
        )
    out = {k: _as_numpy(k, transitions[k]) for k in REQUIRED_KEYS}
    for k in ("timeouts", "episode_starts"):
        if k in transitions and transitions[k] is not None:
            out[k] = _as_numpy(k, transitions[k]).astype(bool).reshape(-1)
    obs, act, nxt = out["observations"], out["actions"], out["next_observations"]
    if obs.ndim != 2:
        raise ValueError(f"observations must have shape (N, state_dim), got {obs.shape}")
    if act.ndim == 1:
        act = out["actions"] = act[:, None]
    if act.ndim != 2:
        raise ValueError(f"actions must have shape (N, action_dim), got {act.shape}")
    if nxt.shape != obs.shape:
        raise ValueError(f"next_observations has shape {nxt.shape} but observations has {obs.shape}: they must match")
    out["terminals"] = out["terminals"].reshape(-1).astype(bool)
    n = obs.shape[0]
    for k, v in out.items():
        if v.shape[0] != n:
            raise ValueError(
                f"{k} has {v.shape[0]} rows but observations has {n}: every array needs one row per transition"
            )
    for k in ("observations", "actions", "next_observations"):
        bad = ~np.isfinite(out[k])
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            raise ValueError(
                f"{k} contains NaN or inf in {len(rows)} row(s) (first: row {rows[0]}): "
                "remove or repair those transitions before training"
            )
    if n == 0:
        raise ValueError("transitions are empty")
    return out


def chain_links(data: dict) -> np.ndarray:
    """``links[i]`` is True when row ``i+1`` continues row ``i`` (length N-1).

    Row i+1 continues row i when it starts where row i ended (``next_observations[i] == observations[i+1]``
    exactly), row i is neither terminal nor a timeout, and row i+1 does not start an episode.
    """
    obs, nxt = data["observations"], data["next_observations"]
    links = np.all(nxt[:-1] == obs[1:], axis=1) & ~data["terminals"][:-1]
    if "timeouts" in data:
        links &= ~data["timeouts"][:-1]
    if "episode_starts" in data:
        links &= ~data["episode_starts"][1:]
    return links


def chained_segments(data: dict, k: int) -> np.ndarray:
    """Non-overlapping stretches of ``k`` consecutive chained, non-terminal rows: an (S, k) array of row indices.

    Scans the rows in order and takes a window ``i .. i+k-1`` whenever its rows chain (:func:`chain_links`) and
    none is terminal, then goes on after it; otherwise it moves one row on. Used for the split's validation
    segments and for the multi-step error of :func:`kfc_lite.koopman.report.koopman_report`.
    """
    usable = ~data["terminals"]
    n = usable.shape[0]
    if n < k:
        return np.zeros((0, k), dtype=np.int64)
    links = chain_links(data)
    # run_id increments whenever the chain breaks, so equal ids are one contiguous stretch
    run_id = np.concatenate([[0], np.cumsum(~links)])
    starts = []
    i = 0
    while i + k <= n:
        if run_id[i] == run_id[i + k - 1] and usable[i : i + k].all():
            starts.append(i)
            i += k
        else:
            i += 1
    if not starts:
        return np.zeros((0, k), dtype=np.int64)
    return np.asarray(starts, dtype=np.int64)[:, None] + np.arange(k)[None, :]


def split_indices(data: dict, config: KoopmanTrainConfig):
    """The seeded 70/30 split of usable rows, and the contiguous validation segments of ``multistep_k`` rows.

    Rows with ``terminals=True`` are left out (see :func:`fit_koopman`). With ``split_by_segments`` (default), the
    rows are first cut into consecutive chunks of ``multistep_k`` chained rows (:func:`chain_links`); each chunk
    goes to train or validation as a whole, with probability ``train_fraction``, and leftover rows (episode tails,
    unchained data) are assigned one by one the same way. So it is still a random 70/30 split of transitions,
    the paper's split when nothing is chained, but the validation set contains whole k-step stretches of
    trajectory on which multi-step error can be measured: a per-row split would leave almost none (a run of k
    validation rows has probability 0.3^k) and neighbouring rows, nearly duplicates, would straddle the split.

    Returns ``(train_rows, val_rows, val_segments)``, the last an (S, k) array of row indices, each row a
    contiguous chained stretch inside the validation set.
    """
    rng = np.random.default_rng(config.seed)
    usable = ~data["terminals"]
    n = usable.shape[0]
    k = config.multistep_k
    in_train = np.zeros(n, dtype=bool)
    segments = np.zeros((0, k), dtype=np.int64)
    assigned = np.zeros(n, dtype=bool)
    if config.split_by_segments and k > 1 and n > k:
        chunks = chained_segments(data, k)
        if len(chunks):
            to_train = rng.random(len(chunks)) < config.train_fraction
            in_train[chunks[to_train].ravel()] = True
            assigned[chunks.ravel()] = True
            segments = chunks[~to_train]
    rest = np.flatnonzero(~assigned & usable)
    in_train[rest[rng.random(len(rest)) < config.train_fraction]] = True
    train_rows = np.flatnonzero(in_train & usable)
    val_rows = np.flatnonzero(~in_train & usable)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError(
            f"the split left {len(train_rows)} training and {len(val_rows)} validation rows out of "
            f"{int(usable.sum())} usable ones: give more transitions"
        )
    return train_rows, val_rows, segments


# -- multi-step error -------------------------------------------------------------------------------------------
@torch.no_grad()
def multistep_error(model: KoopmanForwardModel, observations, actions, k: int | None = None) -> np.ndarray:
    """Open-loop prediction error of ``model`` for horizons 1..k: a NumPy array of k RMS errors.

    Two input layouts:

    * segments: ``observations`` (S, k+1, d_s) and ``actions`` (S, k, d_a), each segment a contiguous stretch
      of one trajectory (``k`` defaults to the segments' length);
    * one trajectory: ``observations`` (T+1, d_s) and ``actions`` (T, d_a); every window of k steps is used.

    From each segment's first state, the model encodes once, steps ``K(a_t)`` in the latent space and decodes
    (:meth:`KoopmanForwardModel.rollout`). Entry ``h-1`` is the root of the mean squared error, over segments
    and state coordinates, of the h-step prediction.
    """
    # device and dtype from the first parameter, or buffer (a model with fixed matrices has no parameters)
    p = next(itertools.chain(model.parameters(), model.buffers()))
    obs = torch.as_tensor(np.asarray(observations) if not isinstance(observations, torch.Tensor) else observations)
    act = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
    obs, act = obs.to(p.device, p.dtype), act.to(p.device, p.dtype)
    if obs.dim() == 2:
        if act.dim() == 1:
            act = act[:, None]
        if act.dim() != 2 or obs.shape[0] != act.shape[0] + 1:
            raise ValueError(
                f"for one trajectory, observations must be (T+1, d_s) and actions (T, d_a); "
                f"got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        T = act.shape[0]
        if k is None:
            raise ValueError("give k, the horizon, for a single trajectory")
        if not 1 <= k <= T:
            raise ValueError(f"k={k} must lie between 1 and the trajectory's {T} steps")
        starts = torch.arange(T - k + 1, device=obs.device)
        idx = starts[:, None] + torch.arange(k + 1, device=obs.device)[None, :]
        obs, act = obs[idx], act[idx[:, :k]]
    elif obs.dim() == 3:
        if act.dim() != 3 or act.shape[:2] != (obs.shape[0], obs.shape[1] - 1):
            raise ValueError(
                f"for segments, observations must be (S, k+1, d_s) and actions (S, k, d_a); "
                f"got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        k = act.shape[1] if k is None else k
        if not 1 <= k <= act.shape[1]:
            raise ValueError(f"k={k} must lie between 1 and the segments' {act.shape[1]} steps")
        obs, act = obs[:, : k + 1], act[:, :k]
    else:
        raise ValueError(f"observations must be (T+1, d_s) or (S, k+1, d_s), got {tuple(obs.shape)}")
    was_training = model.training
    model.eval()
    pred = model.rollout(obs[:, 0], act)
    model.train(was_training)
    err = ((pred - obs[:, 1:]) ** 2).mean(dim=(0, 2)).sqrt()
    return err.cpu().numpy().astype(np.float64)


def segments_to_arrays(data: dict, segments: np.ndarray):
    """(S, k) row indices of chained rows -> observations (S, k+1, d_s) and actions (S, k, d_a)."""
    obs = np.concatenate([data["observations"][segments], data["next_observations"][segments[:, -1:]]], axis=1)
    return obs, data["actions"][segments]


# -- training ---------------------------------------------------------------------------------------------------
def _mean_losses(model, s, a, s_next, config, generator, batch_size=4096, rows=None):
    """Mean forward and reconstruction loss over a whole set (the rows ``rows`` of it, if given), in eval mode,
    in chunks."""
    fwd = rec = 0.0
    n = s.shape[0] if rows is None else len(rows)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size) if rows is None else rows[i : i + batch_size]
            w = (min(n, i + batch_size) - i) / n
            _, f, r = koopman_loss(model, s[sl], a[sl], s_next[sl], config, generator)
            fwd += w * float(f)
            rec += w * float(r)
    return fwd, rec


def should_stop(history: dict, config: KoopmanTrainConfig) -> bool:
    """The paper's early-stopping rule, from epoch ``early_stop_start`` on.

    With ratios r = train/validation loss averaged over the last ``early_stop_window`` epochs, stop if
    (r_recon <= 0.90 and r_forward <= 0.92) or r_forward <= 0.90 or r_recon <= 0.90: the training loss has
    fallen about 10 % below the validation loss. (The first condition is implied by the third; it is kept to
    mirror the original code.)
    """
    epoch = len(history["epoch"])
    w = config.early_stop_window
    if not config.early_stopping or epoch < config.early_stop_start or epoch < w:
        return False
    r_fwd = np.mean(np.asarray(history["train_forward"][-w:]) / np.maximum(history["val_forward"][-w:], 1e-30))
    r_rec = np.mean(np.asarray(history["train_recon"][-w:]) / np.maximum(history["val_recon"][-w:], 1e-30))
    a, b = config.stop_recon_and_forward
    return bool((r_rec <= a and r_fwd <= b) or r_fwd <= config.stop_forward or r_rec <= config.stop_recon)


def _load_pretraining(checkpoint, config: KoopmanTrainConfig, n_train: int, n_val: int) -> dict | None:
    """The state of a stopped pre-training from ``checkpoint``, checked against this fit's config and split."""
    from kfc_lite.files import load_verified

    fix = f"delete {checkpoint} and its .prev/.sha256 files to pre-train from the first epoch"
    found = load_verified(checkpoint, what="Koopman pre-training checkpoint", fix=fix[0].upper() + fix[1:])
    if found is None:
        return None
    state = found.obj
    if not isinstance(state, dict) or state.get("format") != PRETRAINING_FORMAT:
        raise ValueError(f"{found.path} is not a Koopman pre-training checkpoint (fit_koopman): {fix}")
    if state["config"] != config.to_dict() or (state["n_train"], state["n_val"]) != (n_train, n_val):
        raise ValueError(f"{found.path} was written by a pre-training with other settings or other data: {fix}")
    if found.fell_back:
        print("note: " + "; ".join(found.problems) + f"; resuming from {found.path.name}", file=sys.stderr, flush=True)
    return state


def _save_pretraining(checkpoint, epoch, steps, lr, model, optimizer, gen, history, config, n_train, n_val) -> None:
    from kfc_lite.files import save_verified

    save_verified(
        {
            "format": PRETRAINING_FORMAT,
            "epoch": epoch,
            "steps": steps,
            "lr": lr,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "history": history,
            "config": config.to_dict(),
            "n_train": n_train,
            "n_val": n_val,
        },
        checkpoint,
        label=f"epoch {epoch}",
    )


def fit_koopman(
    transitions: dict,
    config: KoopmanTrainConfig | None = None,
    device="auto",
    progress: bool = True,
    model: KoopmanForwardModel | None = None,
    checkpoint=None,
    checkpoint_every: int = 1,
):
    """Pre-train a :class:`KoopmanForwardModel` on logged transitions; return ``(model, history)``.

    Args:
        transitions: ``observations``, ``actions``, ``next_observations``, ``terminals`` (NumPy or torch), and
            optionally ``timeouts`` / ``episode_starts``. Rows with ``terminals=True`` are left out: in a
            ``d4rl.qlearning_dataset``-style log, the "next observation" of a terminal row is often the first
            state of the next episode, not a successor, and even when it is the true post-step state it marks
            an episode boundary whose dynamics (falling over) the model need not fit (docs/paper.md, 'The
            Koopman forward model'; the original code keeps them, a small fidelity trade-off we take for correctness).
        config: :class:`KoopmanTrainConfig`, the paper's defaults when None.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...; the data is moved there once and minibatches are drawn by
            index permutation on the device.
        progress: show a tqdm progress bar over epochs.
        model: continue training this model (its dimensions must fit the data) instead of a fresh one.
        checkpoint: a file path: save the pre-training's state there every ``checkpoint_every`` epochs, and, if it
            already holds one (a stopped fit with the same config and data), continue from it. The caller deletes
            it once the model is saved (:func:`kfc_lite.files.remove_verified`).

    ``history`` holds one entry per epoch: ``epoch``, ``steps``, ``lr``, ``train_forward``, ``train_recon``
    (means over the epoch's minibatches, as the original code logs them), ``val_forward``, ``val_recon``
    (over the whole validation set at the end of the epoch), ``val_multistep`` (RMS error of the
    ``multistep_k``-step open-loop prediction on validation segments, NaN if there are none), plus
    ``multistep_curve`` (the final error for horizons 1..k), ``stopped`` (why training ended), the split sizes
    and the config.
    """
    from tqdm.auto import tqdm

    config = KoopmanTrainConfig() if config is None else config
    if not isinstance(config, KoopmanTrainConfig):
        raise TypeError(f"config must be a KoopmanTrainConfig, got {type(config).__name__}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every is a number of epochs >= 1, got {checkpoint_every!r}")
    data = validate_transitions(transitions)
    d_s, d_a = data["observations"].shape[1], data["actions"].shape[1]
    dev = resolve_device(device)
    tune_cpu_allocator()  # the step's temporaries stay in the heap (kfc_lite.settings)
    torch.manual_seed(config.seed)
    if model is None:
        model = KoopmanForwardModel(d_s, d_a, config.latent_dim, config.hidden_dim)
    elif (model.state_dim, model.action_dim) != (d_s, d_a):
        raise ValueError(
            f"the model has state_dim={model.state_dim}, action_dim={model.action_dim} but the data has "
            f"{d_s} and {d_a}: pass model=None to build a fresh one"
        )
    model.to(dev)
    dtype = next(model.parameters()).dtype

    train_rows, val_rows, segments = split_indices(data, config)
    to_dev = lambda x: torch.as_tensor(x, dtype=dtype, device=dev)
    s, a, s_next = (to_dev(data[k]) for k in ("observations", "actions", "next_observations"))
    # Batches index the full arrays through the split's row numbers: copying the train and validation
    # subsets out would hold the data twice while the model trains (benchmarks/memory.py).
    train_idx = torch.as_tensor(train_rows, dtype=torch.long, device=dev)
    val_idx = torch.as_tensor(val_rows, dtype=torch.long, device=dev)
    if len(segments) > config.multistep_max_segments:
        keep = np.random.default_rng(config.seed + 1).choice(
            len(segments), config.multistep_max_segments, replace=False
        )
        segments = segments[np.sort(keep)]
    seg_obs, seg_act = segments_to_arrays(data, segments) if len(segments) else (None, None)

    gen = torch.Generator(device=dev).manual_seed(config.seed)
    val_gen = torch.Generator(device=dev)
    history = {
        k: []
        for k in ("epoch", "steps", "lr", "train_forward", "train_recon", "val_forward", "val_recon", "val_multistep")
    }
    history.update(
        n_train=int(len(train_rows)),
        n_val=int(len(val_rows)),
        n_val_segments=int(len(segments)),
        n_terminal_rows_dropped=int(data["terminals"].sum()),
        config=config.to_dict(),
        stopped="max_epochs",
    )

    lr = config.lr
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n_train = len(train_rows)
    steps, first_epoch = 0, 1
    saved = _load_pretraining(checkpoint, config, n_train, len(val_rows)) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        lr, steps, first_epoch = saved["lr"], saved["steps"], saved["epoch"] + 1
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        history = saved["history"]
        print(
            f"note: Koopman pre-training continues after epoch {saved['epoch']} ({checkpoint})",
            file=sys.stderr,
            flush=True,
        )
    bar = tqdm(
        range(first_epoch, config.max_epochs + 1),
        desc="Koopman model",
        unit="epoch",
        disable=not progress,
        leave=True,
        initial=first_epoch - 1,
        total=config.max_epochs,
    )
    for epoch in bar:
        if epoch >= config.lr_decay_start and epoch % config.lr_decay_every == 1 % config.lr_decay_every:
            # the original halves the lr and re-creates Adam, forgetting its moment estimates
            lr *= config.lr_decay_factor
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        perm = torch.randperm(n_train, generator=gen, device=dev)
        sum_f = sum_r = 0.0
        n_batches = 0
        for i in range(0, n_train, config.batch_size):
            idx = train_idx[perm[i : i + config.batch_size]]
            loss, f, r = koopman_loss(model, s[idx], a[idx], s_next[idx], config, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sum_f += float(f)
            sum_r += float(r)
            n_batches += 1
            steps += 1
            if config.max_steps is not None and steps >= config.max_steps:
                break
        model.eval()
        val_gen.manual_seed(config.seed + 12345)  # the same validation noise every epoch: a smoother curve
        vf, vr = _mean_losses(model, s, a, s_next, config, val_gen, rows=val_idx)
        ms = float(multistep_error(model, seg_obs, seg_act)[-1]) if seg_obs is not None else float("nan")
        for key, val in (
            ("epoch", epoch),
            ("steps", steps),
            ("lr", lr),
            ("train_forward", sum_f / n_batches),
            ("train_recon", sum_r / n_batches),
            ("val_forward", vf),
            ("val_recon", vr),
            ("val_multistep", ms),
        ):
            history[key].append(val)
        bar.set_postfix(train=f"{sum_f / n_batches:.2e}", val=f"{vf:.2e}", recon=f"{vr:.2e}")
        if config.max_steps is not None and steps >= config.max_steps:
            history["stopped"] = "max_steps"
            break
        if should_stop(history, config):
            history["stopped"] = "early_stopping"
            break
        if checkpoint is not None and epoch % checkpoint_every == 0 and epoch < config.max_epochs:
            _save_pretraining(
                checkpoint, epoch, steps, lr, model, optimizer, gen, history, config, n_train, len(val_rows)
            )
    bar.close()
    release_cpu_memory()  # what the steps' temporaries kept in the C heap (kfc_lite.settings)
    model.eval()
    history["multistep_curve"] = multistep_error(model, seg_obs, seg_act).tolist() if seg_obs is not None else []
    return model, history
