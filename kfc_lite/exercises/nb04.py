"""Checks for notebook 04 (offline RL with CQL)."""

import numpy as np

from kfc_lite.exercises import Wrong, exercise, expect_close, multiple_choice


def _toy_dataset(seed: int = 0) -> dict:
    """A small D4RL-style dict: three episodes, one ends in a fall (terminal), one at the time limit (timeout),
    the last is cut by the end of the file (neither flag)."""
    rng = np.random.default_rng(seed)
    n = 12
    data = {
        "observations": rng.standard_normal((n, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    data["terminals"][3] = True  # episode 1: rows 0-3, falls over
    data["timeouts"][8] = True  # episode 2: rows 4-8, cut at the time limit
    return data  # episode 3: rows 9-11, cut by the end of the file


@exercise("04", "to_transitions")
def check_to_transitions(fn):
    """``fn(data)`` must return D4RL's Q-learning transitions: rows i < N-1 without a time-out, s' = obs[i+1]."""
    from kfc_lite.data import qlearning_dataset

    data = _toy_dataset()
    got = fn({k: v.copy() for k, v in data.items()})
    if got is None:
        raise Wrong(
            "your function returned None",
            hint="return a dict with observations, actions, rewards, next_observations and terminals",
        )
    if not isinstance(got, dict):
        raise Wrong(f"your function returned a {type(got).__name__}, expected a dict")
    ref = qlearning_dataset(data)
    missing = [k for k in ref if k not in got]
    if missing:
        raise Wrong(f"the dict has no {missing}", hint="the keys are those of kfc_lite.data.qlearning_dataset")
    n_got, n_ref = len(np.asarray(got["observations"])), len(ref["observations"])
    if n_got != n_ref:
        got_obs = np.asarray(got["observations"], dtype=np.float32).reshape(n_got, -1)
        has_row = lambda i: got_obs.shape[1] == 3 and bool(np.any(np.all(got_obs == data["observations"][i], axis=1)))
        if has_row(8):
            hint = (
                "you kept the time-out row (8): its next row is the first state of another episode, "
                "so (s, s') there is not a transition"
            )
        elif has_row(11):
            hint = "the last row of the file has no next row: it is always dropped"
        elif not has_row(3):
            hint = (
                "the terminal row (3) must stay: it is a real transition (the robot fell), only its bootstrap is masked"
            )
        else:
            hint = "keep rows i = 0 .. N-2 whose timeouts[i] is False"
        raise Wrong(f"you kept {n_got} transitions, D4RL keeps {n_ref} of these 12 rows", hint=hint)
    for key in ("observations", "actions", "rewards"):
        expect_close(key, np.asarray(got[key], dtype=np.float32), ref[key], hint="take rows i of the kept indices")
    expect_close(
        "next_observations",
        np.asarray(got["next_observations"], dtype=np.float32),
        ref["next_observations"],
        hint="D4RL takes s' from the next row, observations[i + 1]",
    )
    term = np.asarray(got["terminals"])
    if term.shape != ref["terminals"].shape or not np.array_equal(term.astype(bool), ref["terminals"]):
        hint = "terminals copies the true terminals[i] only; a time-out is never 'done'"
        raise Wrong("terminals differ", expected=ref["terminals"], got=term, hint=hint)
    return (
        "10 of 12 rows kept: the time-out row (its s' would be the next episode's start) and the last row "
        "(no next row) are dropped; the fall stays, with done = True."
    )


def _reference_penalty(q_data, q_ood, log_density):
    m = np.asarray(q_ood, dtype=np.float64) - np.asarray(log_density, dtype=np.float64)
    mx = m.max(axis=1, keepdims=True)
    lse = (mx + np.log(np.exp(m - mx).sum(axis=1, keepdims=True)))[:, 0]
    return float(lse.mean() - np.mean(q_data))


@exercise("04", "cql_penalty")
def check_cql_penalty(fn):
    """``fn(q_data (B,), q_ood (B, K), log_density (B, K))`` -> the CQL(H) gap, a number."""
    rng = np.random.default_rng(4)
    cases = [(np.array([1.0, 2.0]), np.array([[0.0, 1.0, 2.0], [2.0, 2.0, 2.0]]), np.full((2, 3), np.log(0.5)))]
    for B, K in ((16, 30), (64, 12)):
        cases.append((rng.normal(5, 2, B), rng.normal(5, 3, (B, K)), rng.normal(-1, 0.5, (B, K))))
    cases.append((rng.normal(780, 5, 8), rng.normal(800, 5, (8, 30)), np.full((8, 30), 3 * np.log(0.5))))  # large Q
    for q_data, q_ood, logd in cases:
        got = fn(q_data.copy(), q_ood.copy(), logd.copy())
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        arr = np.asarray(got, dtype=np.float64)
        if arr.size != 1:
            raise Wrong(
                f"the penalty is one number for the batch; you returned shape {arr.shape}",
                hint="average the log-sum-exp over states (axis 0) and Q on data over the batch",
            )
        value = float(arr.reshape(-1)[0])
        expected = _reference_penalty(q_data, q_ood, logd)
        if not np.isfinite(value):
            raise Wrong(
                "the penalty is not finite",
                got=value,
                hint="with Q near 800, exp(Q) overflows: subtract the row maximum first, "
                "or use scipy.special.logsumexp",
            )
        if not np.isclose(value, expected, rtol=1e-6, atol=1e-6):
            no_density = _reference_penalty(q_data, q_ood, np.zeros_like(logd))
            mean_only = float(np.mean(q_ood - logd) - np.mean(q_data))
            max_only = float(np.max(q_ood - logd, axis=1).mean() - np.mean(q_data))
            hint = "mean over states of logsumexp_k(Q(s, a_k) − log μ(a_k|s)), minus the mean of Q on data"
            if np.isclose(value, no_density, rtol=1e-6, atol=1e-6):
                hint = (
                    "you left out the densities: subtract log_density from q_ood inside the log-sum-exp "
                    "(importance sampling: the actions were drawn from μ, not uniformly at random)"
                )
            elif np.isclose(value, mean_only, rtol=1e-6, atol=1e-6):
                hint = "that is a mean, not a log-sum-exp: the penalty pushes down the *soft maximum* of Q over actions"
            elif np.isclose(value, max_only, rtol=1e-6, atol=1e-6):
                hint = "that is a hard maximum; CQL(H) uses the soft maximum log Σ exp"
            elif np.isclose(value, -expected, rtol=1e-6, atol=1e-6):
                hint = "the sign is flipped: log-sum-exp over sampled actions minus Q on the dataset's actions"
            raise Wrong(
                f"for a batch of {len(q_data)} states and {q_ood.shape[1]} sampled actions the penalty differs",
                expected=expected,
                got=value,
                hint=hint,
            )
    return (
        "right, numerically stable too. Minimising it pushes Q down on actions the policy and chance propose, "
        "and up on the actions in the data."
    )


@exercise("04", "normalized_score")
def check_normalized_score(fn):
    """``fn(returns, random_return, expert_return)`` -> D4RL normalized score(s) in percent."""
    from kfc_lite.data import normalized_score, reference_scores

    lo, hi = reference_scores("hopper")
    returns = np.array([-20.272305, 3234.3, 1500.0, 320.5])
    got = fn(returns.copy(), lo, hi)
    if got is None:
        raise Wrong("your function returned None", hint="did you forget `return`?")
    expected = normalized_score("hopper", returns)
    arr = np.asarray(got, dtype=np.float64)
    if arr.shape == expected.shape and np.allclose(arr, expected / 100.0):
        raise Wrong(
            "these are fractions; papers (and D4RL tables) report percent",
            expected=expected,
            got=arr,
            hint="multiply by 100, as the table in the paper does",
        )
    if arr.shape == expected.shape and np.allclose(arr, 100.0 * (returns - hi) / (lo - hi)):
        raise Wrong("random and expert are swapped", hint="0 is the random policy's return, 100 the expert's")
    expect_close(
        "normalized scores of hopper returns",
        arr,
        expected,
        rtol=1e-9,
        atol=1e-9,
        hint="100 · (R − R_random) / (R_expert − R_random)",
    )
    one = fn(1000.0, lo, hi)
    expect_close(
        "a single return",
        np.asarray(one, dtype=np.float64),
        normalized_score("hopper", 1000.0),
        hint="a single number should work too (NumPy broadcasting does it for you)",
    )
    return "right: 0 is a random policy, 100 D4RL's expert; the paper's Table 1 reports these numbers."


_augmented_terms = multiple_choice(
    "04",
    "augmented_terms",
    "In KFC (and S4RL), which terms of one SAC+CQL update see the augmented states s~, s~'?",
    {
        "a": "every term: the TD term, the CQL log-sum-exp over sampled actions, the CQL data term and the actor",
        "b": "the critic's TD term (Q(s~, a) and the target critic at s~'), and the CQL data term Q(s~, a); "
        "the log-sum-exp over sampled actions, the next action a' ~ π(·|s') and the actor use clean states",
        "c": "only the actor's loss, so that the policy generalises to nearby states",
        "d": "only the TD target r + γ Q̄(s~', a'); Q(s, a) itself stays at the clean state",
    },
    "b",
    {
        "a": "the authors' code keeps the actor and the CQL log-sum-exp on clean states; only the critic's "
        "regression (and the data term of the penalty, which shares Q(s~, a)) sees the new states.",
        "b": "this is the routing of the authors' KFC_prime.py (docs/paper.md, 'Where augmented states go'): "
        "the augmented transition (s~, a, r, s~') feeds the TD regression, while a' is sampled at the clean s'.",
        "c": "the actor is trained on clean states; augmentation enlarges the critic's training set.",
        "d": "the TD term regresses Q(s~, a) onto the target at s~': both ends of the transition move together, "
        "that is what makes it a (new) transition of the dynamics.",
    },
)


check_augmented_terms = _augmented_terms
