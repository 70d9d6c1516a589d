"""What the benchmark scripts share: the throughput workers' timing loop and arguments, and the writing of a
result table with its raw records (imported from the scripts' own folder, so it also works in d3rlpy's separate
environment, where kfc_lite is not installed)."""

import argparse
import json
import pathlib
import sys


def measure(block, steps: int, repeats: int, serve: bool) -> list[float]:
    """Steps per second of ``block()`` (which runs ``steps`` updates and returns seconds).

    ``serve``: wait for "run" lines on stdin and answer each with one timed block, so throughput.py can
    interleave the configurations round by round; otherwise time ``repeats`` blocks in a row.
    """
    if not serve:
        return [steps / block() for _ in range(repeats)]
    rates = []
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        seconds = block()
        rates.append(steps / seconds)
        print(json.dumps({"seconds": seconds}), flush=True)
    return rates


def worker_parser() -> argparse.ArgumentParser:
    """The arguments both workers take: the same synthetic data, network sizes and timing for both."""
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--state-dim", type=int, default=17)
    p.add_argument("--action-dim", type=int, default=6)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256, 256])
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve", action="store_true", help="time blocks on request (run/stop lines on stdin)")
    return p


def write_results(out, stem: str, text: str, data) -> None:
    """Write ``<out>/<stem>.md`` (the table, ``text``) and ``<out>/<stem>.json`` (the raw ``data``)."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(data, indent=2))
