#!/usr/bin/env bash
# The GPU figures in one short, prepared run, for a session that is lent a GPU machine (the device
# tool: about 15 minutes of device time in all, so everything is here and nothing is decided on the machine).
#
#   bash benchmarks/gpu_check.sh                        # on the GPU machine; results under $OUT (or benchmarks/results/gpu)
#   PYTHON=.venv/bin/python DEVICE=cpu STEPS=1 REPEATS=1 WARMUP=1 ROWS=3000 TABLE_ROWS=3000 COMPILE=0 OUT=/tmp/g \
#     bash benchmarks/gpu_check.sh                      # smoke test here (bf16 steps take seconds on most CPUs)
#
# What it measures (benchmarks/throughput.py, every configuration in its own process, interleaved rounds):
#   1. CQL, KFC and KFC++ steps per second on the device, bf16 autocast and fp32 (KFC/KFC++ read their symmetries
#      from the data's symmetry table, built first), peak device memory;
#   2. the same with torch.compile of the networks (COMPILE=0 skips it);
#   3. hours per 1M gradient steps (the paper's run length; the target is KFC++ under 1 h on one H100);
#   4. the symmetry table's build (benchmarks/symmetry_table.py, TABLE_ROWS rows) with the model and the
#      decomposition on the device and on the host's cores, and the error of each storage dtype.
# The machine image has PyTorch but not this project's install: the working tree is put on PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-100}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-10}
ROWS=${ROWS:-100000}
TABLE_ROWS=${TABLE_ROWS:-1000000}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'cores', len(os.sched_getaffinity(0)))"
} | tee "$OUT/machine.txt"
common=(--device "$DEVICE" --threads 1 --no-d3rlpy --steps "$STEPS" --repeats "$REPEATS" --warmup "$WARMUP" --n "$ROWS")
"$PY" benchmarks/throughput.py "${common[@]}" --methods cql kfc kfc++ --precisions bf16 fp32 --out "$OUT/eager"
if [ "${COMPILE:-1}" != 0 ]; then
  "$PY" benchmarks/throughput.py "${common[@]}" --methods cql kfc++ --precisions bf16 --compile --out "$OUT/compile"
fi
"$PY" benchmarks/symmetry_table.py --n "$TABLE_ROWS" --device "$DEVICE" --out "$OUT/table-device"
"$PY" benchmarks/symmetry_table.py --n "$TABLE_ROWS" --device cpu --out "$OUT/table-host"
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("\n| run | method | precision | steps/s | hours per 1M steps | peak device MB |")
print("|---|---|---|---|---|---|")
for run in ("eager", "compile"):
    path = out / run / "throughput.json"
    if not path.is_file():
        continue
    for r in json.loads(path.read_text()):
        sps = r["steps_per_second"]
        print(f"| {run} | {r['method']} | {r['precision']} | {sps:.1f} | "
              f"{1e6 / sps / 3600:.2f} | {r.get('peak_device_mb', float('nan')):.0f} |")
PYEOF
