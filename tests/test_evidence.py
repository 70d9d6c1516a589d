"""kfc_lite.evidence: committed multi-seed results read back with their intervals and verdicts."""

import json

import numpy as np
import pytest

from kfc_lite import evidence, stats


def write_results(root, scores: dict, dataset="pendulum-medium-replica", steps=5000, last_k=2, name="exp"):
    folder = root / "benchmarks" / "results" / name
    folder.mkdir(parents=True)
    records = [
        {"kind": "eval", "dataset": dataset, "method": "cql", "seed": 0, "steps": steps, "normalized_score": 1.0}
    ]
    records += [
        {
            "kind": "score",
            "dataset": dataset,
            "dataset_size": 5000,
            "method": m,
            "seed": s,
            "score": x,
            "last_k": last_k,
            "steps": steps,
            "budget": "pendulum-5k",
        }
        for m, per_seed in scores.items()
        for s, x in per_seed.items()
    ]
    (folder / "learning.json").write_text(json.dumps(records))
    return folder


def test_scores_statistics_and_verdicts_match_kfc_lite_stats(tmp_path):
    rng = np.random.default_rng(0)
    cql = {s: 50 + 10 * rng.standard_normal() for s in range(10)}
    scores = {
        "kfc++": {s: cql[s] + 8 + rng.standard_normal() for s in range(10)},  # clearly above, seed by seed
        "cql": cql,
        "s4rl": {s: cql[s] + 3 * rng.standard_normal() for s in range(10)},
    }  # noise around CQL
    write_results(tmp_path, scores)
    ev = evidence.load("exp", root=tmp_path)
    assert ev.arms == ["cql", "s4rl", "kfc++"]  # the paper's order, whatever the file's
    assert (ev.dataset, ev.steps, ev.last_k) == ("pendulum-medium-replica", 5000, 2)
    row = {r["arm"]: r for r in ev.table()}
    assert row["KFC++"]["mean"] == stats.mean_ci(list(scores["kfc++"].values()))
    assert row["KFC++"]["sd"] == pytest.approx(np.std(list(scores["kfc++"].values()), ddof=1))
    assert "vs_baseline" not in row["CQL"]
    d = row["KFC++"]["vs_baseline"].difference
    assert d.estimate == pytest.approx(np.mean([scores["kfc++"][s] - cql[s] for s in range(10)]))
    assert d.low > 0 and "scores above CQL" in ev.sentence("kfc++") and ev.decision("kfc++") == "helps"
    assert f"{d.estimate:+.1f}" in ev.sentence("kfc++") and "over 10 seeds" in ev.sentence("kfc++")
    s4rl = ev.against("s4rl").difference
    if s4rl.includes(0.0):
        assert "not distinguishable" in ev.sentence("s4rl")
    # over all pairs of runs, not seed by seed: a KFC++ run beats most CQL runs, not all (CQL's seeds spread by 10)
    assert ev.improvement("kfc++") == stats.probability_of_improvement(scores["kfc++"], cql)
    assert 0.5 < ev.improvement("kfc++").estimate < 1.0


def test_only_seeds_both_arms_finished_are_paired(tmp_path):
    write_results(tmp_path, {"cql": {0: 1.0, 1: 2.0, 2: 3.0}, "kfc": {0: 2.0, 1: 4.0}})
    ev = evidence.load("exp", root=tmp_path)
    assert ev.against("kfc").difference.n == 2
    assert ev.against("kfc").difference.estimate == pytest.approx(1.5)


def test_grid_points_keep_their_setting_in_the_label():
    assert evidence.label("s4rl[noise_sigma=0.022]") == "S4RL [noise_sigma=0.022]"
    assert evidence.label("kfc++-gauged") == "KFC++ gauged"


def test_missing_or_mixed_results_are_refused_with_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="clone of the course's repository"):
        evidence.load("nothing-here", root=tmp_path)
    write_results(tmp_path, {"cql": {0: 1.0}}, name="two")
    (tmp_path / "benchmarks/results/two/learning.json").write_text(
        json.dumps(
            [
                {"kind": "score", "dataset": d, "method": "cql", "seed": 0, "score": 1.0, "last_k": 2, "steps": 10}
                for d in ("a", "b")
            ]
        )
    )
    with pytest.raises(ValueError, match="several datasets"):
        evidence.load("two", root=tmp_path)
    write_results(tmp_path, {}, name="empty")
    with pytest.raises(ValueError, match="--report-only"):
        evidence.load("empty", root=tmp_path)


def test_the_figure_shows_every_arm_and_the_zero_line(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    write_results(tmp_path, {"cql": {0: 1.0, 1: 2.0, 2: 4.0}, "kfc++": {0: 2.0, 1: 1.0, 2: 5.0}})
    from kfc_lite.viz.rl import evidence_figure

    fig = evidence_figure(evidence.load("exp", root=tmp_path))
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["CQL", "KFC++"]
    assert [t.get_text() for t in right.get_xticklabels()] == ["KFC++"]
    assert any(np.allclose(line.get_ydata(), 0.0) for line in right.get_lines())


def test_a_running_experiment_reads_as_partial_and_never_as_a_decision(tmp_path):
    """The pendulum-5k budget plans seeds 0-9; with three of them finished the sentence says so."""
    write_results(
        tmp_path,
        {"cql": {0: 50.0, 1: 40.0, 2: 45.0}, "kfc++": {0: 60.0, 1: 52.0, 2: 58.0}, "kfc": {0: 55.0}},
    )
    ev = evidence.load("exp", root=tmp_path)
    assert ev.planned_seeds == tuple(range(10))
    assert ev.finished("kfc++") == [0, 1, 2] and ev.finished("s4rl") == []
    assert "CQL 3 of 10 planned (seeds 0-2)" in ev.progress() and "KFC 1 of 10 planned (seeds 0)" in ev.progress()
    assert "S4RL" not in ev.progress() and "S4RL 0 of 10 planned (seeds none)" in ev.progress(["cql", "s4rl"])
    # the protocol's arms in the protocol's order, then whatever else the results hold
    assert ev.progress(["s4rl", "cql"]).index("S4RL 0 of") < ev.progress(["s4rl", "cql"]).index("CQL 3 of")
    assert "0 seed(s) finished by both" in ev.sentence("s4rl")  # an arm with no finished run yet
    # three shared seeds: an interval, marked as resting on part of the protocol's seeds
    kfcpp = ev.sentence("kfc++")
    assert "over 3 seeds" in kfcpp and "3 of 10 planned seeds so far" in kfcpp and "waits for all of them" in kfcpp
    # one shared seed: no interval, no verdict
    kfc = ev.sentence("kfc")
    assert "too few for an interval" in kfc and "distinguishable" not in kfc and "above" not in kfc
    # a secondary comparison waits for no decision: the protocol decides on KFC++ against CQL alone
    assert "1 of 10 planned seeds so far" in kfc and "decision" not in kfc and "KFC++ against CQL only" in kfc
    assert ev.decision("kfc++") is None  # three of ten seeds: the rule is not applied
    row = {r["arm"]: r for r in ev.table()}
    assert row["KFC"]["mean"] is None and row["KFC"]["sd"] is None and "vs_baseline" not in row["KFC"]
    assert row["KFC++"]["vs_baseline"].difference.n == 3
    kfc_line = next(line for line in ev.format_table().splitlines() if line.startswith("KFC "))
    assert kfc_line.split()[1:5] == ["1", "n/a", "n/a", "n/a"]  # n, mean, IQM, SD: one run has no spread
    # a verdict read off three of ten seeds is printed as an interim one
    assert ev.interim("kfc++") and row["KFC++"]["interim"]
    kfcpp_line = next(line for line in ev.format_table().splitlines() if line.startswith("KFC++ "))
    assert kfcpp_line.endswith(f"(interim: {row['KFC++']['vs_baseline'].verdict})")
    import matplotlib

    matplotlib.use("Agg")
    from kfc_lite.viz.rl import evidence_figure

    evidence_figure(ev)  # one-run arms are drawn as dots, without an interval


def test_a_finished_experiment_is_complete_and_its_sentence_is_the_decision(tmp_path):
    rng = np.random.default_rng(1)
    write_results(tmp_path, {m: {s: 50 + rng.standard_normal() for s in range(10)} for m in ("cql", "kfc++")})
    ev = evidence.load("exp", root=tmp_path)
    assert "planned" not in ev.sentence("kfc++") and "over 10 seeds" in ev.sentence("kfc++")
    assert not ev.interim("kfc++") and "interim" not in ev.format_table()
    d = ev.against("kfc++").difference
    assert ev.decision("kfc++") == (
        "is not distinguishable from CQL" if d.includes(0.0) else "helps" if d.low > 0 else "hurts"
    )


def test_the_decision_uses_the_planned_seeds_only(tmp_path):
    """Seeds 10-29 lie beyond the pendulum-5k budget's 0-9: extra runs cannot change the registered test."""
    cql = {s: 50.0 + (s % 3) for s in range(30)}
    kfcpp = {s: cql[s] + (0.5 if s % 2 else -0.5) for s in range(10)}  # no effect over the planned seeds
    kfcpp.update({s: cql[s] + 1.0 for s in range(10, 30)})  # twenty extra runs, each a little above
    write_results(tmp_path, {"cql": cql, "kfc++": kfcpp})
    ev = evidence.load("exp", root=tmp_path)
    everything = ev.against("kfc++").difference
    assert everything.n == 30 and everything.low > 0  # over every seed the interval would lie above zero
    assert ev.decision("kfc++") == "is not distinguishable from CQL"


def test_a_gap_in_the_seeds_is_still_partial(tmp_path):
    seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 11]  # nine planned seeds and one beyond: seed 9 is missing
    write_results(tmp_path, {m: {s: 50.0 + s * (m == "kfc++") for s in seeds} for m in ("cql", "kfc++")})
    ev = evidence.load("exp", root=tmp_path)
    assert ev.decision("kfc++") is None and "9 of 10 planned seeds so far" in ev.sentence("kfc++")


def test_results_of_an_unknown_budget_are_never_decided(tmp_path):
    folder = write_results(tmp_path, {m: {s: 50.0 + s for s in range(5)} for m in ("cql", "kfc++")})
    records = json.loads((folder / "learning.json").read_text())
    (folder / "learning.json").write_text(json.dumps([{**r, "budget": "someone-elses"} for r in records]))
    ev = evidence.load("exp", root=tmp_path)
    assert ev.planned_seeds == () and ev.decision("kfc++") is None
    assert "planned" not in ev.sentence("kfc++") and "over 5 seeds" in ev.sentence("kfc++")


def test_a_comparison_is_interim_only_while_its_own_seeds_are_missing(tmp_path):
    """KFC++ and CQL have every planned seed while S4RL still runs: KFC++'s verdict is the decision, S4RL's is
    interim, and the table says so row by row."""
    rng = np.random.default_rng(2)
    cql = {s: 50 + 5 * rng.standard_normal() for s in range(10)}
    write_results(
        tmp_path,
        {"cql": cql, "kfc++": {s: cql[s] + rng.standard_normal() for s in range(10)}, "s4rl": {0: 51.0, 1: 49.0}},
    )
    ev = evidence.load("exp", root=tmp_path)
    assert not ev.interim("kfc++") and ev.interim("s4rl") and ev.decision("kfc++") is not None
    lines = {line.split()[0]: line for line in ev.format_table().splitlines()[1:]}
    assert "(interim:" in lines["S4RL"] and "interim" not in lines["KFC++"]
