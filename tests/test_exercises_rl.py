"""Exercise checks of notebooks 04 and 05: right answers pass, wrong ones fail with a useful hint, stubs are
"not done yet"; and the paper's Table 1 rows as data."""

import numpy as np
import pytest
import torch

from kfc_lite import paper
from kfc_lite.exercises import FAILED, NOT_DONE, PASSED, nb04, nb05


def stub(*args, **kwargs):
    raise NotImplementedError


def failed_with(fb, *words):
    text = str(fb)
    assert fb.status == FAILED, text
    for w in words:
        assert w.lower() in text.lower(), f"{w!r} not in feedback:\n{text}"
    return text


# -- nb04.to_transitions ------------------------------------------------------------------------------------
def to_transitions(data):
    n = len(data["observations"])
    keep = np.flatnonzero(~data["timeouts"][: n - 1])
    return {
        "observations": data["observations"][keep],
        "actions": data["actions"][keep],
        "rewards": data["rewards"][keep],
        "next_observations": data["observations"][keep + 1],
        "terminals": data["terminals"][keep],
    }


def test_to_transitions():
    assert nb04.check_to_transitions(to_transitions).status == PASSED
    assert nb04.check_to_transitions(stub).status == NOT_DONE

    def keeps_timeouts(data):
        n = len(data["observations"])
        keep = np.arange(n - 1)
        return {
            "observations": data["observations"][keep],
            "actions": data["actions"][keep],
            "rewards": data["rewards"][keep],
            "next_observations": data["observations"][keep + 1],
            "terminals": data["terminals"][keep],
        }

    failed_with(nb04.check_to_transitions(keeps_timeouts), "time-out row")

    def stored_next(data):  # takes s' from the row itself: off by one
        out = to_transitions(data)
        n = len(data["observations"])
        keep = np.flatnonzero(~data["timeouts"][: n - 1])
        out["next_observations"] = data["observations"][keep]
        return out

    failed_with(nb04.check_to_transitions(stored_next), "next_observations", "observations[i + 1]")

    def timeout_is_done(data):
        out = to_transitions(data)
        n = len(data["observations"])
        keep = np.flatnonzero(~data["timeouts"][: n - 1])
        out["terminals"] = np.zeros(len(keep), bool)
        return out

    failed_with(nb04.check_to_transitions(timeout_is_done), "terminals")
    assert nb04.check_to_transitions(lambda d: None).status == FAILED


# -- nb04.cql_penalty ---------------------------------------------------------------------------------------
def cql_penalty(q_data, q_ood, log_density):
    m = q_ood - log_density
    mx = m.max(axis=1, keepdims=True)
    return float(np.mean(mx[:, 0] + np.log(np.exp(m - mx).sum(axis=1))) - np.mean(q_data))


def test_cql_penalty_matches_the_library():
    rng = np.random.default_rng(0)
    q_data, q_ood, logd = rng.normal(size=8), rng.normal(size=(8, 30)), rng.normal(size=(8, 30))
    lib = kfc_lib_penalty(q_data, q_ood, logd)
    assert cql_penalty(q_data, q_ood, logd) == pytest.approx(lib, rel=1e-5)
    assert nb04.check_cql_penalty(cql_penalty).status == PASSED
    # the library's function, one critic at a time, is a right answer too
    assert nb04.check_cql_penalty(kfc_lib_penalty).status == PASSED


def kfc_lib_penalty(q_data, q_ood, logd):
    from kfc_lite.rl.sac import cql_penalty as lib

    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)
    return float(lib(t(q_data)[None], t(q_ood)[None], t(logd))[0])


def test_cql_penalty_wrong_answers():
    assert nb04.check_cql_penalty(stub).status == NOT_DONE
    failed_with(nb04.check_cql_penalty(lambda qd, qo, ld: cql_penalty(qd, qo, 0 * ld)), "densities")
    failed_with(nb04.check_cql_penalty(lambda qd, qo, ld: float(np.mean(qo - ld) - np.mean(qd))), "mean")
    failed_with(
        nb04.check_cql_penalty(lambda qd, qo, ld: float(np.max(qo - ld, 1).mean() - np.mean(qd))), "hard maximum"
    )
    failed_with(nb04.check_cql_penalty(lambda qd, qo, ld: -cql_penalty(qd, qo, ld)), "sign")
    naive = lambda qd, qo, ld: float(np.mean(np.log(np.exp(qo - ld).sum(1))) - np.mean(qd))
    with np.errstate(over="ignore"):
        failed_with(nb04.check_cql_penalty(naive), "overflow")
    failed_with(nb04.check_cql_penalty(lambda qd, qo, ld: np.log(np.exp(qo - ld).sum(1)) - qd), "one number")


# -- nb04.normalized_score ----------------------------------------------------------------------------------
def test_normalized_score():
    right = lambda R, lo, hi: 100.0 * (np.asarray(R) - lo) / (hi - lo)
    assert nb04.check_normalized_score(right).status == PASSED
    assert nb04.check_normalized_score(stub).status == NOT_DONE
    failed_with(nb04.check_normalized_score(lambda R, lo, hi: (np.asarray(R) - lo) / (hi - lo)), "percent")
    failed_with(nb04.check_normalized_score(lambda R, lo, hi: 100.0 * (np.asarray(R) - hi) / (lo - hi)), "swapped")
    failed_with(nb04.check_normalized_score(lambda R, lo, hi: 100.0 * np.asarray(R) / hi), "differ")


def test_augmented_terms():
    assert nb04.check_augmented_terms("b").status == PASSED
    assert nb04.check_augmented_terms(" B ").status == PASSED
    failed_with(nb04.check_augmented_terms("a"), "clean states")
    failed_with(nb04.check_augmented_terms("z"), "not one of")
    assert nb04.check_augmented_terms(None).status == NOT_DONE
    assert nb04.check_augmented_terms(NotImplemented).status == NOT_DONE
    assert nb04.check_augmented_terms(stub).status == NOT_DONE
    assert nb04.check_augmented_terms(lambda: "b").status == PASSED


# -- nb05 ---------------------------------------------------------------------------------------------------
def final_score(rows, k):
    rows = sorted(rows, key=lambda r: r["step"])[-k:]
    return float(np.mean([r["normalized"] for r in rows]))


def test_final_score():
    assert nb05.check_final_score(final_score).status == PASSED
    assert nb05.check_final_score(stub).status == NOT_DONE
    failed_with(nb05.check_final_score(lambda rows, k: float(np.mean([r["normalized"] for r in rows[-k:]]))), "sort")
    failed_with(
        nb05.check_final_score(
            lambda rows, k: float(np.mean([r["return"] for r in sorted(rows, key=lambda r: r["step"])[-k:]]))
        ),
        "raw returns",
    )
    failed_with(nb05.check_final_score(lambda rows, k: max(r["normalized"] for r in rows)), "optimistic")
    failed_with(nb05.check_final_score(lambda rows, k: [1.0, 2.0]), "one number")


def test_final_score_reference():
    rows = nb05._eval_rows()
    assert paper.final_score(rows[::-1], last=3) == pytest.approx(final_score(rows, 3))
    assert nb05.check_final_score(lambda r, k: paper.final_score(r, last=k)).status == PASSED
    with pytest.raises(ValueError, match="no evaluation rows"):
        paper.final_score([])
    with pytest.raises(ValueError, match="positive"):
        paper.final_score(rows, last=0)


def test_checks_never_raise_on_a_crashing_answer():
    def crash(*args):
        raise ZeroDivisionError("boom")

    for check in (
        nb04.check_to_transitions,
        nb04.check_cql_penalty,
        nb04.check_normalized_score,
        nb05.check_final_score,
    ):
        fb = check(crash)
        assert fb.status == FAILED and "ZeroDivisionError" in str(fb)


# -- kfc_lite.paper -----------------------------------------------------------------------------------------
def test_table1_rows_are_v0_and_complete():
    assert len(paper.TABLE1) == 5
    for row in paper.TABLE1:
        assert row.version == "v0" and row.dataset.endswith("-v0")
        assert set(row.scores) == set(paper.METHODS)
        assert row.scores["kfc++"] >= row.scores["cql"]  # the paper's claim on every recovered row
    assert paper.table1_row("hopper-medium-v2").scores == {
        "cql": 58.0,
        "s4rl": 78.9,
        "s4rl-adv": 81.3,
        "kfc": 90.6,
        "kfc++": 94.2,
    }
    mean_kfcpp = np.mean([r.scores["kfc++"] for r in paper.TABLE1])
    assert mean_kfcpp == pytest.approx(91.2, abs=0.05)  # docs/paper.md: the mean of the five KFC++ rows is 91.2
    assert paper.table1_row("hopper-random-v0") is None


def test_versions_and_comparability():
    assert paper.task_of("hopper-medium-replica") == "hopper-medium"
    assert paper.task_of("runs/data/hopper_medium-replica.hdf5") == "hopper-medium"
    assert paper.version_of("halfcheetah-medium-expert-v2") == "v2"
    assert paper.version_of("hopper") is None
    same = paper.compare("hopper-medium-v0", {"cql": 55.0})[0]
    assert same["comparable"] and same["paper"] == 58.0 and same["paper_dataset"] == "hopper-medium-v0"
    v2 = paper.compare("hopper-medium-v2", {"kfc++": 90.0})[0]
    assert not v2["comparable"] and "v2" in v2["note"] and v2["paper"] == 94.2
    rep = paper.compare("hopper-medium-replica", {"s4rl": 1.0})[0]
    assert not rep["comparable"] and "replica" in rep["note"]
    missing = paper.compare("hopper-random-replica", {"cql": 3.0})[0]
    assert missing["paper"] is None and "10.8" in missing["note"] and "unverified" in missing["note"]
    text = paper.format_comparison(paper.compare("walker2d-medium-replica", {"cql": 1.0, "kfc": float("nan")}))
    assert "walker2d-medium-v0" in text and "walker2d-medium-replica" in text and "79.2" in text
    other = paper.compare("hopper-random-replica", {"kfc++": 2.0}, against="hopper-medium-v0")[0]
    assert other["paper"] == 94.2 and not other["comparable"] and "different task" in other["note"]
    assert paper.compare("hopper-medium-v0", {"kfc": 80.0}, against="hopper-medium-v0")[0]["comparable"]
    with pytest.raises(ValueError, match="no recovered row"):
        paper.compare("hopper-random-v0", {"cql": 1.0}, against="hopper-random-v0")
    with pytest.raises(ValueError, match="dataset name"):
        paper.task_of("")
    with pytest.raises(TypeError, match="method name"):
        paper.compare("hopper-medium-v0", [1.0])
