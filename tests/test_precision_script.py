"""benchmarks/precision.py runs every method end to end at a tiny size and writes its table.

Only the plumbing is tested here (each method's augmentation reaches the agent, both precisions, the gaps table);
whether bf16 changes learning is measured by running the script (benchmarks/results/precision.md).
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bf16_emulation  # noqa: E402

EMULATION_REFUSED = pytest.mark.skipif(
    bf16_emulation.refused(), reason="oneDNN has bf16 kernels here: the emulation is refused"
)


@pytest.mark.parametrize("bf16", ["native", pytest.param("emulated", marks=EMULATION_REFUSED)])
def test_tiny_run_of_every_method_writes_its_gaps(tmp_path, dataset, bf16):
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "precision.py"),
        "--dataset",
        dataset,
        "--transitions",
        "300",
        "--steps",
        "4",
        "--log-every",
        "2",
        "--bc-steps",
        "1",
        "--hidden",
        "8",
        "--koopman-steps",
        "3",
        "--methods",
        "cql",
        "s4rl",
        "kfc",
        "kfc++",
        "--bf16",
        bf16,
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    saved = json.loads((out / "precision.json").read_text())
    assert sorted(saved["summary"]) == ["cql", "kfc", "kfc++", "s4rl"]
    assert len(saved["runs"]) == 4 * 2 * 2  # methods x precisions x seeds
    assert all(len(rows) == 2 for rows in saved["runs"].values())  # steps 2 and 4 logged
    # the augmentations reach the critic: the same seed's CQL and S4RL runs differ from the first update on
    assert saved["runs"]["cql-fp32-seed0"][0]["td_loss"] != saved["runs"]["s4rl-fp32-seed0"][0]["td_loss"]
    table = (out / "precision.md").read_text()
    assert table.count("| kfc++ |") == 4 and "bf16 within the seed gap" in table
    assert (out / "precision.png").stat().st_size > 0
    assert ("bf16 emulated" in table) == (bf16 == "emulated")
    # the emulation really ran: every bf16 run of --bf16 emulated computed its products through it
    if bf16 == "emulated":
        counts = saved["emulated_products"]
        assert all(counts[name] > 0 for name in saved["runs"] if "-bf16-" in name), counts


def test_one_seed_is_refused_with_the_reason(tmp_path, dataset):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "precision.py"), "--dataset", dataset, "--seeds", "0"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2 and "two seeds at least" in res.stderr
