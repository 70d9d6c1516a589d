"""The timing loop both throughput workers share (imported from the script's own folder, so it also works
in d3rlpy's separate environment, where kfc_lite is not installed)."""
import json
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
