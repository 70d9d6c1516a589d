"""Checks for notebook 02 (learning Koopman with control)."""

from __future__ import annotations

import numpy as np

from kfc_lite.exercises import Wrong, exercise, expect_close, multiple_choice


def _np(x):
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


@exercise(
    "02", "operator", hint_on_error="K0 is (n, n), K_actions is (d_a, n, n), a is (B, d_a); the result is (B, n, n)"
)
def check_operator(fn):
    """``fn(K0, K_actions, a)`` must return the batch of matrices ``K(a) = K0 + sum_i a_i K_i``."""
    import torch

    g = torch.Generator().manual_seed(2)
    for n, d_a, B in ((3, 1, 4), (4, 3, 5)):
        K0 = torch.randn(n, n, generator=g, dtype=torch.float64)
        Ks = torch.randn(d_a, n, n, generator=g, dtype=torch.float64)
        a = torch.randn(B, d_a, generator=g, dtype=torch.float64)
        got = fn(K0, Ks, a)
        expected = K0 + torch.einsum("bi,irc->brc", a, Ks)
        if got is None:
            raise Wrong("your function returned None", hint="return the batch of matrices")
        got = _np(got)
        if got.shape != tuple(expected.shape):
            hint = (
                "you summed over the batch: keep one matrix per action, sum only over the action coordinates i"
                if got.shape == (n, n)
                else "the result should hold one (n, n) matrix per row of a: shape (B, n, n)"
            )
            raise Wrong(
                f"with n={n}, d_a={d_a} and a batch of B={B} actions the shape is {got.shape}",
                expected=f"shape {tuple(expected.shape)}",
                got=f"shape {got.shape}",
                hint=hint,
            )
        exp = expected.numpy()
        if np.allclose(got, exp - K0.numpy()):
            raise Wrong("the result misses K0", hint="K(a) = K0 + sum_i a_i K_i: the action-free part is always there")
        if np.allclose(got, K0.numpy() + np.einsum("bi,icr->brc", a.numpy(), Ks.numpy())):
            raise Wrong(
                "each K_i is transposed", hint="K_actions[i] is already the (n, n) matrix K_i; do not swap its axes"
            )
        expect_close(
            f"K(a) for n={n}, d_a={d_a}",
            got,
            exp,
            rtol=1e-6,
            atol=1e-9,
            hint="a[b, i] multiplies the whole matrix K_actions[i]; add K0 once per action",
        )
    return "K(a) = K0 + Σ a_i K_i is right for single and multi-dimensional actions, batched."


@exercise("02", "rollout", hint_on_error="encode s0 once, then apply model.latent_step k times, decoding every latent")
def check_rollout(fn):
    """``fn(model, s0, actions)`` must return the open-loop predictions for steps 1..k, staying in the latent space."""
    import torch

    from kfc_lite.koopman.model import KoopmanForwardModel

    torch.manual_seed(0)
    model = KoopmanForwardModel(3, 2, latent_dim=5, hidden_dim=16).double().eval()
    g = torch.Generator().manual_seed(3)
    s0 = torch.randn(4, 3, generator=g, dtype=torch.float64)
    actions = torch.randn(4, 6, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        got = fn(model, s0, actions)
        expected = model.rollout(s0, actions)
        z = model.encode(s0)
        reencoded, s = [], s0
        for t in range(actions.shape[1]):
            s = model.decode(model.latent_step(model.encode(s), actions[:, t]))
            reencoded.append(s)
        reencoded = torch.stack(reencoded, 1)
    if got is None:
        raise Wrong("your function returned None", hint="return the stacked predictions, shape (B, k, d_s)")
    got = _np(got)
    if got.shape == (4, 7, 3):
        raise Wrong(
            "the result has k+1 states: it includes s0",
            expected="shape (4, 6, 3): steps 1..k",
            got=f"shape {got.shape}",
            hint="return the predictions only, not the starting state",
        )
    if got.shape == (4, 3):
        raise Wrong(
            "the result is only the last state",
            expected="shape (4, 6, 3)",
            got=f"shape {got.shape}",
            hint="collect the decoded state after every step and stack them along dim 1",
        )
    if got.shape == (4, 6, 5):
        raise Wrong(
            "the result is in the latent space",
            expected="shape (4, 6, 3)",
            got=f"shape {got.shape}",
            hint="decode every latent with model.decode",
        )
    if got.shape == (4, 6, 3) and np.allclose(got, reencoded.numpy()) and not np.allclose(got, expected.numpy()):
        raise Wrong(
            "you decode and re-encode at every step",
            hint="a Koopman rollout encodes once and stays in the latent space: z_{t+1} = K(a_t) z_t; "
            "decode only to read the state out",
        )
    del z
    expect_close(
        "the k-step predictions",
        got,
        expected.numpy(),
        rtol=1e-6,
        atol=1e-9,
        hint="step t uses actions[:, t]; z_{t+1} = model.latent_step(z_t, actions[:, t]); "
        "the first prediction is after one step",
    )
    return "the rollout encodes once, steps K(a_t) in the latent space and decodes every step."


_failure_mode = multiple_choice(
    "02",
    "failure_mode",
    question="The paper's model predicts one step well, but its errors after 10 and 50 steps are many times larger. "
    "Which explanation fits the plots?",
    options={
        "a": "the model overfits the training set",
        "b": "small one-step errors are fed back through K(a) at every step and compound over the horizon",
        "c": "the learning rate was too high",
        "d": "the decoder cannot represent the state",
    },
    correct="b",
    explanations={
        "a": "overfitting would show as a validation one-step loss far above the training one; the loss curves "
        "show them close, and the drift appears on validation and training trajectories alike.",
        "b": "the model is trained one step at a time; an open-loop rollout applies K(a) again to its own "
        "slightly wrong latent, so a small error in an eigenvalue's angle becomes a growing phase lag and a "
        "small error in its modulus a growing amplitude error.",
        "c": "a too-high learning rate would show as a noisy or diverging training loss, and it would spoil the "
        "one-step prediction too, which is tiny here.",
        "d": "the reconstruction loss is small and the one-step prediction is good, so the decoder represents "
        "the states well; the error builds up with the horizon instead.",
    },
)


check_failure_mode = _failure_mode


_training_diagnosis = multiple_choice(
    "02",
    "training_diagnosis",
    question="While the validation one-step loss falls (in quick mode about a thousandfold), the validation 20-step "
    "error of the same model rises during training (in quick mode it about doubles). Which diagnosis fits?",
    options={
        "a": "the model overfits: it memorises the training transitions and fails on the validation ones",
        "b": "the learning rate is too high, so training is unstable",
        "c": "at first the model predicts almost nothing, and its 20-step rollout settles near the mean state, "
        "whose error is only the spread of the states; once training makes K(a) keep the swing going, small "
        "errors in phase and amplitude compound over 20 steps until the prediction is off by a whole swing, "
        "worse than a constant guess; the one-step loss never applies K(a) twice, so it cannot see this",
        "d": "the 20-step error is measured on other data than the one-step loss, so the two curves cannot be compared",
    },
    correct="c",
    explanations={
        "a": "overfitting shows as a validation loss that stops falling or rises while the training loss keeps "
        "falling; here the validation one-step loss falls with the training loss. Look at the multi-step "
        "error of an untrained model instead: what does it predict after 20 steps?",
        "b": "an unstable optimiser shows as a noisy or rising loss; the one-step losses fall smoothly. The rise is "
        "in a quantity that the loss does not contain: the error of K(a) applied 20 times to its own output.",
        "c": "the one-step loss rewards a model that gets one step right, and a model that gets one step right "
        "keeps the pendulum swinging; a 20-step rollout of a swinging model with a slightly wrong frequency "
        "is out of phase, which costs more than predicting the mean. To train what you measure, put the "
        "multi-step error (or a latent-consistency term) in the loss; for KFC, which moves single "
        "transitions, the one-step model is what matters.",
        "d": "both are computed on the validation split: the one-step loss on its transitions, the 20-step error "
        "on contiguous stretches of the same validation episodes.",
    },
)


check_training_diagnosis = _training_diagnosis
