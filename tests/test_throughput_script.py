"""benchmarks/throughput.py runs end to end at a tiny size and times a baseline revision's own code.

Only the script's plumbing is tested here (workers, interleaved rounds, records, the baseline export); the
speed itself is measured by running the script, never by a timed test.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git_ok() -> bool:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _git_ok(), reason="needs the git repository (the baseline is exported from it)")
def test_tiny_run_with_a_baseline_writes_its_table(tmp_path):
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "throughput.py"),
        "--threads",
        "1",
        "--methods",
        "cql",
        "--precisions",
        "fp32",
        "--steps",
        "1",
        "--repeats",
        "2",
        "--n",
        "2000",
        "--no-d3rlpy",
        "--baseline",
        "HEAD",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    records = json.loads((out / "throughput.json").read_text())
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    now = [r for r in records if r["implementation"] == "kfc_lite"]
    base = [r for r in records if r["implementation"] == f"kfc_lite@{head[:10]}"]
    assert len(now) == len(base) == 1
    assert pathlib.Path(now[0]["kfc_lite_path"]) == ROOT / "kfc_lite"
    assert pathlib.Path(base[0]["kfc_lite_path"]) == ROOT / "benchmarks" / ".baseline" / head / "kfc_lite"
    for r in records:
        assert len(r["rounds_seconds"]) == 2 and r["steps_per_second"] > 0 and r["peak_rss_mb"] > 0
    assert now[0]["x_baseline"] > 0 and base[0]["x_baseline"] is None
    assert now[0]["step_time_x_cql"] == 1.0
    table = (out / "throughput.md").read_text()
    assert "× baseline" in table and f"kfc_lite@{head[:10]}" in table


def test_an_unknown_baseline_revision_is_a_clear_error(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "throughput.py"),
        "--threads",
        "1",
        "--no-d3rlpy",
        "--baseline",
        "no-such-revision-xyz",
        "--out",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert "not a git revision" in res.stderr


def test_kfc_rows_carry_their_symmetry_table(tmp_path):
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "throughput.py"),
        "--threads",
        "1",
        "--methods",
        "cql",
        "kfc++",
        "--precisions",
        "fp32",
        "--steps",
        "2",
        "--repeats",
        "1",
        "--n",
        "3000",
        "--no-d3rlpy",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    records = {r["method"]: r for r in json.loads((out / "throughput.json").read_text())}
    assert records["cql"]["symmetry_table"] is None
    table = records["kfc++"]["symmetry_table"]
    assert table["rows"] == 3000 and table["bytes_per_row"] > 0
    assert all(r["step_time_x_cql"] > 0 for r in records.values())
    assert "kfc++: symmetry table of 3000 rows" in (out / "throughput.md").read_text()


def test_gpu_check_script_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.sh (the prepared run for a lent GPU) at a tiny size on the CPU: it must not rot
    between the sessions that get a GPU."""
    import os

    env = dict(
        os.environ,
        PYTHON=sys.executable,
        DEVICE="cpu",
        STEPS="1",
        REPEATS="1",
        WARMUP="0",  # a bf16 step takes seconds on a CPU without bf16 kernels: the default 10 would take minutes
        ROWS="3000",
        COMPILE="0",
        TABLE_ROWS="3000",
        OUT=str(tmp_path / "gpu"),
    )
    res = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True, timeout=600, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    records = json.loads((tmp_path / "gpu" / "eager" / "throughput.json").read_text())
    assert sorted((r["method"], r["precision"]) for r in records) == [
        ("cql", "bf16"),
        ("cql", "fp32"),
        ("kfc", "bf16"),
        ("kfc", "fp32"),
        ("kfc++", "bf16"),
        ("kfc++", "fp32"),
    ]
    assert "hours per 1M steps" in res.stdout and (tmp_path / "gpu" / "machine.txt").is_file()
    for where in ("table-device", "table-host"):
        table = json.loads((tmp_path / "gpu" / where / "symmetry_table.json").read_text())
        assert table["builds"][0]["rows"] == 3000 and table["builds"][0]["seconds"] > 0
        assert {e["storage"] for e in table["storage"]} == {"float32", "float16", "bfloat16"}


def test_symmetry_table_benchmark_measures_builds_and_storage_and_rejects_a_missing_gpu(tmp_path):
    """benchmarks/symmetry_table.py: builds on 1 and 2 workers, the three storage dtypes; no CUDA is a clear error."""
    script = str(ROOT / "benchmarks" / "symmetry_table.py")
    res = subprocess.run(
        [sys.executable, script, "--n", "3000", "--workers", "1", "2", "--sample", "256", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads((tmp_path / "symmetry_table.json").read_text())
    assert [b["workers"] for b in data["builds"]] == [1, 2] and all(b["rows_per_second"] > 0 for b in data["builds"])
    by_storage = {e["storage"]: e for e in data["storage"]}
    assert by_storage["float16"]["bytes_per_row"] < by_storage["float32"]["bytes_per_row"]
    assert by_storage["float32"]["latent_error_max"] < by_storage["float16"]["latent_error_max"] < 1e-2
    assert "minutes per 1M rows" in (tmp_path / "symmetry_table.md").read_text()
    if not __import__("torch").cuda.is_available():
        bad = subprocess.run(
            [sys.executable, script, "--device", "cuda", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert bad.returncode == 2 and "no CUDA device" in bad.stderr


def test_memory_benchmark_reports_the_symmetry_table(tmp_path):
    """benchmarks/memory.py at a tiny size: the KFC++ rows carry their table, held in memory or mapped."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "memory.py"),
        "--n",
        "3000",
        "--small",
        "1500",
        "--steps",
        "1",
        "--koopman-steps",
        "1",
        "--out",
        str(tmp_path),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    records = {r["method"]: r for r in json.loads((tmp_path / "memory.json").read_text())}
    assert records["cql"]["table"] is None
    assert records["cql"]["data_cost_ratio"] == records["cql"]["data_cost_ratio_without_table"]
    # 3 episodes of 1000 rows, each ending in a time-out row that qlearning_dataset leaves out: 2997 transitions
    assert records["kfc++"]["table"]["rows"] == 2997 and not records["kfc++"]["table"]["mapped"]
    assert records["kfc++:mapped"]["table"]["mapped"]
    assert "symmetry table" in (tmp_path / "memory.md").read_text()
