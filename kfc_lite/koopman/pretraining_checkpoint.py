"""The checkpoint of a stopped Koopman pre-training, so that :func:`~kfc_lite.koopman.fit.fit_koopman` can continue it.

Pre-training on a full D4RL dataset takes a while. With ``checkpoint=``, :func:`~kfc_lite.koopman.fit.fit_koopman`
saves, after every ``checkpoint_every`` epochs, everything the next epoch needs: the model, Adam, the learning
rate, the minibatch generator and the history, verified and kept in pairs (:mod:`kfc_lite.files`). A file is
only taken up again by a fit with the same config and a split of the same sizes, so that the resumed run ends
with bit-exactly the model of an uninterrupted one.

Sibling modules: :mod:`kfc_lite.koopman.fit` is the training loop that calls these two functions.
"""

from __future__ import annotations

import sys

from kfc_lite.koopman.objective import KoopmanTrainConfig

__all__ = ["PRETRAINING_FORMAT", "load_pretraining_state", "save_pretraining_state"]

#: The ``format`` field of a pre-training checkpoint, which tells it apart from any other verified file.
PRETRAINING_FORMAT = "kfc-lite-koopman-pretraining"


def load_pretraining_state(checkpoint, config: KoopmanTrainConfig, n_train: int, n_val: int) -> dict | None:
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


def save_pretraining_state(
    checkpoint, epoch, steps, lr, model, optimizer, gen, history, config, n_train, n_val
) -> None:
    """Write the state after ``epoch`` to ``checkpoint`` (verified; the previous one is kept as a fallback)."""
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
