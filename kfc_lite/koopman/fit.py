"""Training the Koopman forward model (docs/paper.md, 'The Koopman forward model'; the authors' ``main_kfc.py``).

The loss is one-step only: the decoded one-step prediction plus ten times the reconstruction of jittered states
(:mod:`kfc_lite.koopman.objective`, with its settings :class:`KoopmanTrainConfig`).

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

Where things are (each name below also imports from here):

* :mod:`kfc_lite.koopman.objective`: :class:`KoopmanTrainConfig` and the losses;
* :mod:`kfc_lite.koopman.transitions`: checking the transitions, chained segments, the train/validation split;
* :mod:`kfc_lite.koopman.multistep`: the multi-step error, logged every epoch;
* :mod:`kfc_lite.koopman.pretraining_checkpoint`: saving and loading a stopped pre-training;
* here: the training loop, :func:`fit_koopman`, and its early-stopping rule, :func:`should_stop`.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from kfc_lite.koopman.model import KoopmanForwardModel

# The training loop calls ``multistep_error`` (and ``_mean_losses`` below) through this module's namespace, so a
# test can interrupt a fit by patching ``kfc_lite.koopman.fit.multistep_error``.
from kfc_lite.koopman.multistep import multistep_error, segments_to_arrays
from kfc_lite.koopman.objective import (
    KoopmanTrainConfig,
    huber,
    koopman_loss,
    latent_consistency_loss,
    prediction_loss,
    reconstruction_loss,
)
from kfc_lite.koopman.pretraining_checkpoint import (
    PRETRAINING_FORMAT,
    load_pretraining_state,
    save_pretraining_state,
)
from kfc_lite.koopman.transitions import (
    REQUIRED_KEYS,
    chain_links,
    chained_segments,
    split_indices,
    validate_transitions,
)
from kfc_lite.settings import release_cpu_memory, resolve_device, tune_cpu_allocator

__all__ = [
    "fit_koopman",
    "should_stop",
    # re-exported from the modules that define them
    "KoopmanTrainConfig",
    "huber",
    "prediction_loss",
    "reconstruction_loss",
    "latent_consistency_loss",
    "koopman_loss",
    "REQUIRED_KEYS",
    "validate_transitions",
    "chain_links",
    "chained_segments",
    "split_indices",
    "multistep_error",
    "segments_to_arrays",
    "PRETRAINING_FORMAT",
]


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


def _train_epoch(model, optimizer, tensors, train_idx, config: KoopmanTrainConfig, gen, steps: int):
    """One shuffled pass over the training rows (or up to ``config.max_steps``); returns the epoch's mean forward
    and reconstruction losses, as the original code logs them, and the step count after it."""
    s, a, s_next = tensors
    model.train()
    perm = torch.randperm(len(train_idx), generator=gen, device=train_idx.device)
    sum_f = sum_r = 0.0
    n_batches = 0
    for i in range(0, len(train_idx), config.batch_size):
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
    return sum_f / n_batches, sum_r / n_batches, steps


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
        for k in (
            "epoch",
            "steps",
            "lr",
            "train_forward",
            "train_recon",
            "val_forward",
            "val_recon",
            "val_multistep",
            "seconds",
        )
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
    saved = load_pretraining_state(checkpoint, config, n_train, len(val_rows)) if checkpoint is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        lr, steps, first_epoch = saved["lr"], saved["steps"], saved["epoch"] + 1
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        history = saved["history"]
        history.setdefault("seconds", [])  # a checkpoint written before epochs were timed
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
        epoch_start = time.perf_counter()
        train_f, train_r, steps = _train_epoch(model, optimizer, (s, a, s_next), train_idx, config, gen, steps)
        val_gen.manual_seed(config.seed + 12345)  # the same validation noise every epoch: a smoother curve
        vf, vr = _mean_losses(model, s, a, s_next, config, val_gen, rows=val_idx)
        ms = float(multistep_error(model, seg_obs, seg_act)[-1]) if seg_obs is not None else float("nan")
        for key, val in (
            ("epoch", epoch),
            ("steps", steps),
            ("lr", lr),
            ("train_forward", train_f),
            ("train_recon", train_r),
            ("val_forward", vf),
            ("val_recon", vr),
            ("val_multistep", ms),
            ("seconds", time.perf_counter() - epoch_start),  # summed over every stretch of a resumed training
        ):
            history[key].append(val)
        bar.set_postfix(train=f"{train_f:.2e}", val=f"{vf:.2e}", recon=f"{vr:.2e}")
        if config.max_steps is not None and steps >= config.max_steps:
            history["stopped"] = "max_steps"
            break
        if should_stop(history, config):
            history["stopped"] = "early_stopping"
            break
        if checkpoint is not None and epoch % checkpoint_every == 0 and epoch < config.max_epochs:
            save_pretraining_state(
                checkpoint, epoch, steps, lr, model, optimizer, gen, history, config, n_train, len(val_rows)
            )
    bar.close()
    release_cpu_memory()  # what the steps' temporaries kept in the C heap (kfc_lite.settings)
    model.eval()
    history["multistep_curve"] = multistep_error(model, seg_obs, seg_act).tolist() if seg_obs is not None else []
    return model, history
