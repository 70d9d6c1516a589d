"""The learning benchmark (benchmarks/learning.py) end to end at its tiny budget, and its summary arithmetic."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import shutil
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("learning_bench", ROOT / "benchmarks" / "learning.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def _rec(method, seed, step, score, dataset="d"):
    return {
        "kind": "eval",
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "steps": step,
        "normalized_score": score,
        "budget": "t",
    }


def test_summary_uses_last_k_of_finished_runs_only():
    bench = _bench()
    budget = bench.Budget("t", ("x",), (0, 1, 2), steps=20, eval_every=10, eval_episodes=1, last_k=2)
    records = [
        _rec("cql", 0, 10, 0.0),
        _rec("cql", 0, 20, 10.0),
        _rec("cql", 1, 20, 40.0),
        _rec("cql", 1, 10, 20.0),
        _rec("cql", 2, 10, 99.0),
    ]  # seed 2 stopped at step 10: not counted; seed 1 out of step order
    s = bench.summarize(records, budget)[("d", "cql")]
    assert s["n"] == 2 and s["scores"] == {0: 5.0, 1: 30.0}
    assert s["mean"] == pytest.approx(17.5)
    assert s["sd"] == pytest.approx(17.678, abs=1e-3)  # the sample SD; the population SD would be 12.5
    assert s["mean_ci"].low <= 17.5 <= s["mean_ci"].high
    # the json's score records hold the same numbers the table is computed from
    scores = bench.score_records(records, budget)
    assert [(r["kind"], r["seed"], r["score"], r["last_k"]) for r in scores] == [
        ("score", 0, 5.0, 2),
        ("score", 1, 30.0, 2),
    ]


def test_comparison_with_cql_is_paired_and_says_when_it_cannot_tell():
    bench = _bench()
    budget = bench.Budget("t", ("x",), (0, 1, 2, 3), steps=10, eval_every=10, eval_episodes=1, last_k=1)
    cql = {0: 10.0, 1: 40.0, 2: 25.0, 3: 60.0}
    records = [_rec("cql", s, 10, v) for s, v in cql.items()]
    records += [_rec("s4rl", s, 10, v + 5.0 + 0.2 * s) for s, v in cql.items()]  # above CQL on every seed
    records += [_rec("kfc", s, 10, v + d) for (s, v), d in zip(cql.items(), (-9.0, 8.0, -3.0, 6.0))]  # mixed
    records += [_rec("kfc++", 0, 10, 99.0)]  # one seed: no interval
    comparison = bench.compare(bench.summarize(records, budget))
    assert comparison[("d", "s4rl")]["paired"].verdict == "s4rl above cql"
    assert comparison[("d", "s4rl")]["improvement"].estimate == pytest.approx(10 / 16)  # all pairs, not seed by seed
    assert comparison[("d", "kfc")]["paired"].verdict == "not distinguishable"
    assert comparison[("d", "kfc++")]["seeds"] == [0] and comparison[("d", "kfc++")]["paired"] is None
    table = "\n".join(bench.score_tables(bench.summarize(records, budget)))
    assert "| d | s4rl | [0, 1, 2, 3] | +5.3 [" in table and "| s4rl above cql |" in table
    assert "| d | kfc++ | [0] | - | too few seeds | - |" in table
    assert "| d | kfc++ | 1 | 99.0 | 99.0 - | 99.0 - | - |" in table
    assert "interim" not in table.lower()  # no planned seeds given: nothing to wait for
    # planned seeds 0-3: s4rl and kfc share them all with CQL, kfc++ only seed 0; and with seeds 0-4 planned,
    # every comparison waits for seed 4
    interim = "\n".join(bench.score_tables(bench.summarize(records, budget), budget.seeds))
    assert "| s4rl above cql |" in interim and "| d | kfc++ | [0] | - | too few seeds | - |" in interim
    assert "**Interim**: a verdict marked *interim* rests on fewer seeds than the planned [0, 1, 2, 3]" in interim
    longer = "\n".join(bench.score_tables(bench.summarize(records, budget), (0, 1, 2, 3, 4)))
    assert "| *interim*: s4rl above cql |" in longer and "| *interim*: not distinguishable |" in longer
    finished = [r for r in records if r["method"] != "kfc++"]
    assert "interim" not in "\n".join(bench.score_tables(bench.summarize(finished, budget), budget.seeds)).lower()


def test_tiny_budget_runs_every_method_and_writes_its_table(tmp_path, capsys):
    bench = _bench()
    runs, results = tmp_path / "runs", tmp_path / "results"
    args = ["--budget", "tiny", "--runs", str(runs), "--results", str(results)]
    assert bench.main(args) == 0
    saved = json.loads((results / "learning.json").read_text())
    assert isinstance(saved, list) and saved
    assert {r["kind"] for r in saved} == {"eval", "score", "run", "koopman"}
    records = [r for r in saved if r["kind"] == "eval"]
    for r in records:
        assert {"dataset", "method", "seed", "steps", "normalized_score", "budget"} <= set(r)
        assert r["dataset"] == "hopper-random-replica" and np.isfinite(r["normalized_score"])
    assert {r["method"] for r in records} == {"cql", "s4rl", "kfc", "kfc++"}
    assert sorted({r["steps"] for r in records}) == [6, 12]
    # one score per finished run: the mean of its last_k = 2 evaluations, here both
    scores = {r["method"]: r["score"] for r in saved if r["kind"] == "score"}
    cql_last = np.mean([r["normalized_score"] for r in records if r["method"] == "cql"])
    assert set(scores) == {"cql", "s4rl", "kfc", "kfc++"} and scores["cql"] == pytest.approx(cql_last)
    md = (results / "learning.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| hopper-random-replica | ")]
    cql_row = next(line for line in rows if line.startswith("| hopper-random-replica | cql | "))
    assert cql_row.startswith(f"| hopper-random-replica | cql | 1 | {cql_last:.1f} | {cql_last:.1f} - |")
    assert sum(" too few seeds " in line for line in rows) == 3  # one seed per method: no comparison interval
    assert "Score of a run = the mean of its last 2 evaluations" in md
    assert "CPU-budget result, not a reproduction" in md and "relative one-step error" in md
    assert "command: `benchmarks/learning.py --budget tiny" in md and "machine:" in md
    assert (results / "learning.png").stat().st_size > 1000
    # the Koopman model is trained once and shared: both KFC runs hold a byte-identical copy
    root = runs / "tiny-12steps" / "hopper-random-replica-2000"
    assert (root / "kfc-seed0" / "koopman.pt").read_bytes() == (root / "koopman.pt").read_bytes()
    assert (root / "kfcpp-seed0" / "koopman.pt").read_bytes() == (root / "koopman.pt").read_bytes()
    # a second call finds every run finished and trains nothing
    stamp = (root / "cql-seed0" / "checkpoint.pt").stat().st_mtime_ns
    assert bench.main(args) == 0
    assert (root / "cql-seed0" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert json.loads((results / "learning.json").read_text()) == saved
    # the report again from the json alone, with the run folders gone
    shutil.rmtree(runs)
    again = tmp_path / "again"
    assert bench.main(["--from-json", str(results / "learning.json"), "--results", str(again)]) == 0
    assert json.loads((again / "learning.json").read_text()) == saved
    tables = lambda text: text[text.index("| dataset | method | n |") :]  # everything after the header
    assert tables((again / "learning.md").read_text()) == tables(md)
    assert "command: `benchmarks/learning.py --from-json" in (again / "learning.md").read_text()


def test_from_json_keeps_the_diagnostics_of_a_file_without_them(tmp_path):
    bench = _bench()
    old = [
        {**{k: v for k, v in r.items() if k != "kind"}, "budget": "tiny"}  # from before records had kinds
        for r in [_rec(m, seed, step, 1.0 + seed + step) for m in ("cql", "kfc") for seed in (0, 1) for step in (6, 12)]
    ]
    (tmp_path / "learning.json").write_text(json.dumps(old))
    (tmp_path / "learning.md").write_text("# old\n\n| a | table |\n\n## Diagnostics\n\n| koopman | 0.219 |\n")
    assert bench.main(["--from-json", str(tmp_path / "learning.json")]) == 0
    md = (tmp_path / "learning.md").read_text()
    assert "| a | table |" not in md and md.count("## Diagnostics") == 1 and "| koopman | 0.219 |" in md
    assert "Kept from the previous report" in md
    saved = json.loads((tmp_path / "learning.json").read_text())
    assert [r["kind"] for r in saved] == ["eval"] * 8 + ["score"] * 4
    # rewriting again keeps one note, not two
    assert bench.main(["--from-json", str(tmp_path / "learning.json")]) == 0
    assert (tmp_path / "learning.md").read_text().count("Kept from the previous report") == 1


def test_every_budget_names_replica_recipes_and_sound_settings():
    bench = _bench()
    from kfc_lite.data.replicas import parse_recipe

    for name, budget in bench.BUDGETS.items():
        assert budget.name == name
        for spec in budget.datasets:
            replica, size = bench.parse_dataset(spec)
            assert parse_recipe(replica)  # a known <env>-<kind>-replica recipe
            assert size is None or size > 0
        assert len(budget.seeds) >= (1 if name == "tiny" else 3), "the issue asks for at least 3 seeds per method"
        assert budget.eval_every <= budget.steps and budget.last_k >= 1
        assert budget.steps // budget.eval_every >= budget.last_k, "last_k evaluations must exist"


def test_merge_adds_a_second_sweeps_arm_and_refuses_to_mix_runs(tmp_path, capsys):
    bench = _bench()
    run = lambda m, seed, score: [{**_rec(m, seed, step, score + step), "budget": "tiny"} for step in (6, 12)]
    first = [r for seed in (0, 1) for m in ("cql", "s4rl") for r in run(m, seed, 10.0 * seed + (m == "s4rl"))]
    second = [r for seed in (0, 1) for r in run("s4rl", seed, 50.0 + seed)]  # a fixed `set`: named by the method
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "learning.json").write_text(json.dumps(first))
    (tmp_path / "second.json").write_text(json.dumps(second))
    base = ["--from-json", str(tmp_path / "a" / "learning.json"), "--merge", str(tmp_path / "second.json")]

    def refused(args, words):
        with pytest.raises(SystemExit) as stop:
            bench.main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and all(w in err for w in words), err

    # an arm of the same name in both files: the second sweep's runs would join the first one's arm
    refused(base, ["arm(s) ['s4rl']", "--rename OLD=NEW"])
    refused(base + ["--rename", "cql=x"], ["['cql']", "does not hold"])
    refused(base + ["--rename", "s4rl"], ["OLD=NEW pairs"])
    refused(base + ["--rename", "s4rl="], ["distinct, non-empty names"])
    refused(base + ["--rename", "s4rl=cql"], ["arm(s) ['cql']"])  # renamed onto an arm of the first file
    refused(["--from-json", str(tmp_path / "a" / "learning.json"), "--rename", "a=b"], ["--merge FILE"])
    assert json.loads((tmp_path / "a" / "learning.json").read_text()) == first  # nothing written when refused

    out = tmp_path / "merged"
    assert bench.main(base + ["--rename", "s4rl=s4rl[noise_sigma=0.5]", "--results", str(out)]) == 0
    saved = json.loads((out / "learning.json").read_text())
    scores = {(r["method"], r["seed"]): r["score"] for r in saved if r["kind"] == "score"}
    assert scores[("s4rl[noise_sigma=0.5]", 1)] == pytest.approx(51.0 + 9.0)  # mean of 57 and 63
    assert scores[("s4rl", 1)] == pytest.approx(11.0 + 9.0) and len(scores) == 6  # the first sweep's arm untouched
    md = (out / "learning.md").read_text()
    assert "| d | s4rl[noise_sigma=0.5] | [0, 1] | +45.5 [" in md  # 59 - 9 and 60 - 19: paired against CQL
    # merging the same sweep into the merged file again is refused: its runs are already there
    again = ["--from-json", str(out / "learning.json"), "--merge", str(tmp_path / "second.json")]
    refused(again + ["--rename", "s4rl=s4rl[noise_sigma=0.5]"], ["arm(s) ['s4rl[noise_sigma=0.5]']"])
    # runs of another budget cannot share a table
    (tmp_path / "cpu.json").write_text(json.dumps([{**r, "budget": "cpu"} for r in second]))
    other = ["--from-json", str(tmp_path / "a" / "learning.json"), "--merge", str(tmp_path / "cpu.json")]
    refused(other + ["--rename", "s4rl=s4rl[noise_sigma=0.5]"], ["different budgets", "['cpu']"])
    # two different Koopman models of one dataset cannot sit under one table; the same model twice (its training
    # timed on each occasion) is kept once
    model = {"kind": "koopman", "dataset": "d", "reconstruction_offset": 0.03, "wall_s": 100.0}
    with pytest.raises(ValueError, match="different Koopman models of d"):
        bench.merge_records(first + [model], second + [{**model, "reconstruction_offset": 0.04}], {"s4rl": "m"})
    merged = bench.merge_records(first + [model], second + [{**model, "wall_s": 90.0}], {"s4rl": "m"})
    assert [r for r in merged if r["kind"] == "koopman"] == [model]


def test_add_seeds_joins_a_second_sitting_of_the_same_arms_and_refuses_anything_else(tmp_path, capsys):
    bench = _bench()
    run = lambda m, seed, score, steps=(6, 12): [
        {**_rec(m, seed, step, score + step), "budget": "tiny"} for step in steps
    ]
    model = {
        "kind": "koopman",
        "dataset": "d",
        **dict(relative_one_step_error=0.06, reconstruction_offset=0.03, state_norm=6.8, val_forward=6e-4),
        **dict(val_recon=4e-5, val_multistep=3.0, epochs=75, steps=9000, stopped="early_stopping", wall_s=100.0),
    }
    lost = {"kind": "run", "dataset": "d", "method": "kfc++", "seed": 2, "td_loss": 9.0, "wall_s": None}
    # the first sitting: seeds 0-1 finished, kfc++ seed 2 stopped after its first evaluation (its folder lost)
    first = [r for seed in (0, 1) for m in ("cql", "kfc++") for r in run(m, seed, 10.0 * seed + (m == "kfc++"))]
    first += run("kfc++", 2, 99.0, steps=(6,)) + [lost, model]
    first += [{**lost, "method": "cql"}]  # cql seed 2 stopped before its first evaluation: diagnostics only
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "learning.json").write_text(json.dumps(first))
    # the second sitting: seed 2 of both arms, the same model trained again (only its time differs)
    second = run("cql", 2, 20.0) + run("kfc++", 2, 30.0) + [{**model, "wall_s": 90.0}]
    (tmp_path / "second.json").write_text(json.dumps(second))
    base = ["--from-json", str(tmp_path / "a" / "learning.json"), "--add-seeds", str(tmp_path / "second.json")]

    out = tmp_path / "joined"
    assert bench.main(base + ["--results", str(out)]) == 0
    said = capsys.readouterr().out
    assert "d kfc++ seed 2: the unfinished run of" in said and "d cql seed 2: the unfinished run of" in said
    saved = json.loads((out / "learning.json").read_text())
    scores = {(r["method"], r["seed"]): r["score"] for r in saved if r["kind"] == "score"}
    assert scores[("kfc++", 2)] == pytest.approx(30.0 + 9.0) and scores[("cql", 2)] == pytest.approx(29.0)
    assert len(scores) == 6 and scores[("kfc++", 1)] == pytest.approx(11.0 + 9.0)
    kfc2 = [r["normalized_score"] for r in saved if r["kind"] == "eval" and (r["method"], r["seed"]) == ("kfc++", 2)]
    assert kfc2 == [36.0, 42.0]  # the lost attempt's evaluation (105) is gone, not averaged in
    assert not [r for r in saved if r["kind"] == "run" and r["seed"] == 2]  # and its diagnostics with it
    assert [r for r in saved if r["kind"] == "koopman"] == [model]
    assert "| d | kfc++ | [0, 1, 2] |" in (out / "learning.md").read_text()  # paired over the three seeds

    def refused(args, words):
        with pytest.raises(SystemExit) as stop:
            bench.main(args)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and all(w in err for w in words), err

    # the same runs twice (the joined file given its own seeds again): a finished run is never replaced
    refused(
        ["--from-json", str(out / "learning.json"), "--add-seeds", str(tmp_path / "second.json")], ["('d', 'cql', 2)"]
    )
    # a new arm is a merge, not more seeds
    (tmp_path / "new.json").write_text(json.dumps(run("s4rl", 2, 5.0)))
    refused(
        ["--from-json", str(tmp_path / "a" / "learning.json"), "--add-seeds", str(tmp_path / "new.json")],
        ["('d', 's4rl')", "--merge FILE"],
    )
    # another Koopman model, or another budget, cannot join the table
    (tmp_path / "other.json").write_text(json.dumps(second[:-1] + [{**model, "reconstruction_offset": 0.04}]))
    other = ["--from-json", str(tmp_path / "a" / "learning.json"), "--add-seeds", str(tmp_path / "other.json")]
    refused(other, ["different Koopman models of d", "--retrained-model"])
    # ...unless the second sitting's model is known to be trained again: both are kept, the second marked with the
    # seed it served, and the report shows both, through a rewrite from the joined file too
    assert bench.main(other + ["--retrained-model", "--results", str(tmp_path / "two")]) == 0
    for _ in range(2):
        saved = json.loads((tmp_path / "two" / "learning.json").read_text())
        models = [(r["dataset"], r.get("seeds"), r["reconstruction_offset"]) for r in saved if r["kind"] == "koopman"]
        assert models == [("d", None, 0.03), ("d", [2], 0.04)]
        md = (tmp_path / "two" / "learning.md").read_text()
        assert "| d | 0.060 | 0.03 (6.8) |" in md and "| d (the model of seed(s) 2) | 0.060 | 0.04 (6.8) |" in md
        assert bench.main(["--from-json", str(tmp_path / "two" / "learning.json")]) == 0
    refused(["--from-json", str(tmp_path / "a" / "learning.json"), "--retrained-model"], ["give --add-seeds FILE"])
    (tmp_path / "cpu.json").write_text(json.dumps([{**r, "budget": "cpu"} for r in second[:-1]]))
    refused(
        ["--from-json", str(tmp_path / "a" / "learning.json"), "--add-seeds", str(tmp_path / "cpu.json")],
        ["different budgets"],
    )
    refused(["--add-seeds", str(tmp_path / "second.json")], ["give --from-json too"])
    assert json.loads((tmp_path / "a" / "learning.json").read_text()) == first  # the first file never written


def test_the_machine_line_names_the_vector_instruction_set():
    """Two AMD EPYC machines of this project differ in AVX-512, and with it in their floating-point results: the
    reports' machine line says which kernels torch used."""
    import torch

    from kfc_lite.info import cpu_name
    from kfc_lite.sweep.report import machine

    isa = torch.backends.cpu.get_cpu_capability()
    assert cpu_name().endswith(f", {isa}") and machine().startswith(cpu_name() + ", ")


def test_the_matched_arms_second_sitting_is_the_same_sweep_on_the_other_seeds():
    """The hopper S4RL-matched arm runs in two sweep files (its first machine was replaced after seed 0): joined
    with --add-seeds, they must be one arm, so the files differ only in their name, out folder and seeds."""
    import yaml

    from kfc_lite.sweep.budgets import BUDGETS

    folder = ROOT / "benchmarks" / "results" / "hopper-medium-1m"
    first, second = (yaml.safe_load((folder / f).read_text()) for f in ("s4rl-matched.yaml", "s4rl-matched-2.yaml"))
    differ = {k for k in first.keys() | second.keys() if first.get(k) != second.get(k)}
    assert differ <= {"name", "out", "seeds"} and first["out"] != second["out"]
    records = json.loads((folder / "s4rl-matched" / "learning.json").read_text())
    scored = [r["seed"] for r in records if r["kind"] == "score"]  # the joined arm's finished runs
    assert len(scored) == len(set(scored))  # one run a seed: no seed was trained in both sittings and kept twice
    assert set(scored) == set(BUDGETS[first["budget"]].seeds)  # together, the sittings ran every planned seed
    assert set(second["seeds"]) < set(scored)  # the second sitting ran some of them, the first the rest


def test_diagnostics_show_a_koopman_table_only_when_a_run_used_a_model():
    from kfc_lite.sweep.report import diagnostics_tables

    diag = {("d", "s4rl", 0): {"aug_state_shift": 0.01, "cql_weight": 9.5, "td_loss": 10.0}}
    without = "\n".join(diagnostics_tables(diag, {}))
    assert "Koopman model: none" in without and "relative one-step error" not in without
    assert "| d | s4rl | 0.01 |" in without  # the augmentation table is still there
    model = {
        "relative_one_step_error": 0.06,
        "reconstruction_offset": 0.027,
        "state_norm": 6.8,
        "val_forward": 6e-4,
        "val_recon": 4e-5,
        "val_multistep": 3.0,
        "epochs": 75,
        "steps": 204750,
        "wall_s": 4315.0,
    }
    with_model = "\n".join(diagnostics_tables(diag, {"d": model}))
    assert "Koopman model: none" not in with_model
    assert "| d | 0.060 | 0.027 (6.8) | 0.0006 | 4e-05 | 3 | 75 (204750) | 4315 |" in with_model
