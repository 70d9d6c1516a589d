"""Checks for notebook 05 (KFC on D4RL)."""

import numpy as np

from kfc_lite.exercises import Wrong, exercise


def _eval_rows():
    """Evaluation rows as ``metrics.jsonl`` holds them (``kind``, ``step``, ``return``, ``normalized``)."""
    from kfc_lite.data import normalized_score

    returns = [210.0, 480.0, 905.5, 1210.0, 1105.0, 1330.25]
    return [
        {"kind": "eval", "step": 5000 * (i + 1), "return": r, "normalized": normalized_score("hopper", r)}
        for i, r in enumerate(returns)
    ]


def _reference_final(rows, k):
    return float(np.mean([r["normalized"] for r in sorted(rows, key=lambda r: r["step"])[-k:]]))


@exercise("05", "final_score")
def check_final_score(fn):
    """``fn(eval_rows, k)`` -> the mean normalized score of the last ``k`` evaluations (by step)."""
    rows = _eval_rows()
    for k in (1, 3, 6):
        shuffled = [dict(r) for r in (rows[3:] + rows[:3])]  # the rows of several files may come in any order
        got = fn(shuffled, k)
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        arr = np.asarray(got, dtype=np.float64)
        if arr.size != 1:
            raise Wrong(f"the final score is one number; you returned shape {arr.shape}")
        value = float(arr.reshape(-1)[0])
        expected = _reference_final(rows, k)
        if np.isclose(value, expected):
            continue
        returns_mean = float(np.mean([r["return"] for r in sorted(rows, key=lambda r: r["step"])[-k:]]))
        unsorted = float(np.mean([r["normalized"] for r in shuffled[-k:]]))
        hint = "sort the rows by 'step', take the last k, and average their 'normalized' values"
        if np.isclose(value, returns_mean):
            hint = "you averaged raw returns; the comparison with the paper needs the 'normalized' scores"
        elif np.isclose(value, unsorted):
            hint = "the rows are not in step order here: sort them by 'step' before taking the last k"
        elif np.isclose(value, float(np.max([r["normalized"] for r in rows]))):
            hint = (
                "the best evaluation over training is an optimistic pick (it selects on the test episodes); "
                "average the last k"
            )
        raise Wrong(f"for k = {k} the final score differs", expected=expected, got=value, hint=hint)
    return (
        "right: the mean of the last k evaluations is less noisy than the last one alone and, unlike the best "
        "one, does not pick on the test episodes."
    )


def _paired_cases():
    """(a, b) pairs of seed -> score mappings; b lists its seeds in another order, so pairing by position is wrong."""
    rng = np.random.default_rng(5)
    cases = []
    for n, effect in ((10, 4.0), (3, -2.0), (6, 0.5)):
        base = 50 + 12 * rng.standard_normal(n)
        a = {s: float(base[s] + effect + 3 * rng.standard_normal()) for s in range(n)}
        b = {s: float(base[s]) for s in reversed(range(n))}
        cases.append((a, b))
    return cases


def _near(got, x) -> bool:
    """A mistake is recognised to three digits (1.96 for 1.959964 is still "used z")."""
    return np.allclose(got, x, rtol=1e-3, atol=1e-6)


def _t_interval(d: np.ndarray, ddof: int = 1, z: bool = False) -> tuple[float, float, float]:
    from scipy import stats as st

    m = float(d.mean())
    q = 1.959963984540054 if z else float(st.t.ppf(0.975, d.size - 1))
    half = q * float(d.std(ddof=ddof)) / np.sqrt(d.size)
    return m, m - half, m + half


@exercise("05", "paired_interval")
def check_paired_interval(fn):
    """``fn(a, b)`` with ``a``, ``b`` mappings seed -> run score -> ``(mean, low, high)``: the mean of a - b over the
    seeds and its Student-t 95 % interval: the decision rule of the course's pre-registered experiments."""
    for a, b in _paired_cases():
        got = fn(dict(a), dict(b))
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        got = np.asarray(got, dtype=np.float64).reshape(-1)
        if got.size != 3:
            raise Wrong(
                f"return three numbers (mean, low, high); you returned {got.size}",
                hint="the estimate and both ends of the interval",
            )
        seeds = sorted(a)
        d = np.array([a[s] - b[s] for s in seeds])
        expected = _t_interval(d)
        if np.allclose(got, expected, rtol=1e-6, atol=1e-9):
            continue
        n = d.size
        by_position = np.array(list(a.values())) - np.array(list(b.values()))
        xa, xb = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        from scipy import stats as st

        half_unpaired = float(st.t.ppf(0.975, n - 1)) * np.sqrt(xa.var(ddof=1) / n + xb.var(ddof=1) / n)
        unpaired = (float(d.mean()), float(d.mean()) - half_unpaired, float(d.mean()) + half_unpaired)
        hint = "take d = a[s] - b[s] seed by seed; the interval is mean(d) +- t(0.975, n-1) * SD(d) / sqrt(n)"
        if _near(got, _t_interval(by_position)):
            hint = (
                "you paired the runs by position; dictionaries here list their seeds in different orders: pair "
                "them by seed (a[s] - b[s] for s in sorted(a))"
            )
        elif _near(got, unpaired):
            hint = (
                "that is the unpaired interval (each method's spread added up): the seeds are paired, so the "
                "spread that counts is that of the differences a[s] - b[s], which is much smaller"
            )
        elif _near(got, _t_interval(d, z=True)):
            hint = (
                f"you used 1.96; with n = {n} seeds the quantile is Student's t with n - 1 degrees of freedom "
                f"({float(st.t.ppf(0.975, n - 1)):.2f}): scipy.stats.t.ppf(0.975, n - 1)"
            )
        elif _near(got, _t_interval(d, ddof=0)):
            hint = "use the sample SD of the differences (ddof=1), not the population SD"
        raise Wrong(f"with {n} seeds the interval differs", expected=np.array(expected), got=got, hint=hint)
    return (
        "right: pairing by seed removes what the two runs of a seed share, and Student's t keeps the interval "
        "honest with few seeds. If it includes 0, the two methods are not distinguishable at this budget."
    )


def _shift_case(seed: int = 0):
    """A small random Koopman model and a batch of transitions with their KFC++ draws, in float64."""
    import torch

    from kfc_lite.koopman import KoopmanForwardModel

    torch.manual_seed(seed)
    model = KoopmanForwardModel(state_dim=3, action_dim=1, latent_dim=6, hidden_dim=16).double()
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(8, 3, generator=g, dtype=torch.float64)
    s_next = s + 0.05 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    a = torch.rand(8, 1, generator=g, dtype=torch.float64) * 2 - 1
    eps = 0.3 * torch.randn(8, 6, generator=g, dtype=torch.float64)
    return model, s, a, s_next, eps


@exercise("05", "kfcpp_shift")
def check_kfcpp_shift(fn):
    """``fn(model, s, a, s_next, eps)`` -> ``(s~, s~')``: both states moved along the KFC++ symmetry of ``K(a)``
    with the same draw ``eps`` (docs/paper.md, 'The symmetry augmentation')."""
    import torch

    from kfc_lite.symmetry import kfcpp_shift, kfcpp_symmetry

    model, s, a, s_next, eps = _shift_case()
    with torch.no_grad():
        got = fn(model, s.clone(), a.clone(), s_next.clone(), eps.clone())
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise Wrong("return two batches, (s~, s~')", hint="the moved state and the moved next state")
        moved, moved_next, _ = kfcpp_shift(model, s, a, s_next, eps)
        got_s, got_next = (torch.as_tensor(x, dtype=torch.float64) for x in got)
        if got_s.shape != moved.shape or got_next.shape != moved_next.shape:
            raise Wrong(
                f"shapes {tuple(got_s.shape)}, {tuple(got_next.shape)}; expected {tuple(moved.shape)} twice",
                hint="one moved state per row of s, in state space (decode the moved latent)",
            )
        ok_s = torch.allclose(got_s, moved, atol=1e-8)
        ok_next = torch.allclose(got_next, moved_next, atol=1e-8)
        if ok_s and ok_next:
            return (
                "right: encode both states, move both latents with the same (I + sigma), decode. The training "
                "run below now uses your function."
            )
        z = model.encode(s)
        sigma, _ = kfcpp_symmetry(model.operator(a), eps)
        hint = "z = E(s); sigma from K(a) and eps (kfcpp_symmetry); s~ = D(z + sigma z); the same for s'"
        if torch.allclose(got_s, model.decode(z), atol=1e-8):
            hint = "your s~ is just D(E(s)): the symmetry did not move it (did you apply I + sigma to the latent?)"
        elif torch.allclose(got_s, model.decode((sigma @ z.unsqueeze(-1)).squeeze(-1)), atol=1e-8):
            hint = "you decoded sigma z; the symmetry of the paper moves z to (I + sigma) z = z + sigma z"
        elif torch.allclose(got_s, model.decode(z + (z.unsqueeze(-2) @ sigma).squeeze(-2)), atol=1e-8):
            hint = "you multiplied z from the other side (z sigma is sigma^T z): apply sigma @ z, a column vector"
        elif torch.allclose(got_s, s + (sigma @ z.unsqueeze(-1)).squeeze(-1)[..., : s.shape[-1]], atol=1e-8):
            hint = "sigma acts on the latent z = E(s), not on the state: encode, move, then decode"
        elif ok_s and torch.allclose(got_next, s_next, atol=1e-8):
            hint = "s' must move too, with the same sigma: a moved transition is (s~, a, r, s~')"
        elif ok_s and torch.allclose(got_next, model.decode(model.encode(s_next)), atol=1e-8):
            hint = "s' was only encoded and decoded: move its latent with the same (I + sigma) as s"
        raise Wrong(
            "the moved states differ from KFC++'s" if not ok_s else "s~ is right, s~' is not",
            expected=(moved if not ok_s else moved_next),
            got=(got_s if not ok_s else got_next),
            hint=hint,
        )


def augmenter_with(fn, model, shift_sigma: float = 1.0):
    """An augmenter that moves every batch with the learner's ``fn(model, s, a, s_next, eps)`` once
    :func:`check_kfcpp_shift` passes it, and the library's KFC++ augmenter (with a one-line message) until then, so the
    notebook's training run works in the student edition too.

    The learner's version takes the symmetry branch on every batch (the library's takes it with probability
    ``p_koopman`` and S4RL's noise otherwise) and draws ``eps`` as the library does: one N(0, (3e-3 rho)^2) value per
    latent dimension and transition, from the global RNG.
    """
    import torch

    from kfc_lite.rl.augment import KFCPP_EPS_UNIT, Augmenter, make_augmenter

    if not check_kfcpp_shift(fn).passed:
        print("your kfcpp_shift does not pass its check yet: this run uses the library's KFC++ augmenter")
        return make_augmenter("kfc++", model, shift_sigma=shift_sigma)

    class YourKFCpp(Augmenter):
        name = "kfc++ (yours)"

        def _transform(self, s, s_next, batch):
            eps = torch.randn(s.shape[0], model.latent_dim, dtype=s.dtype) * (KFCPP_EPS_UNIT * shift_sigma)
            return fn(model, s, batch["actions"], s_next, eps)

    model.eval()
    print("this run moves its batches with your kfcpp_shift")
    return YourKFCpp()
