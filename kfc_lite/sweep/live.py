"""The live table of a running sweep: one line per trial, printed every few seconds and once at the end.

A Ray Tune callback: Tune calls ``on_step_end`` after each step of its event loop, with every trial and its last
reported result (:mod:`kfc_lite.sweep.trial` reports step, score and node). Tune's own reporter is switched off
(``verbose=0``) because its columns are Tune's, not ours.
"""

from __future__ import annotations

import sys
import time

from ray.tune import Callback


def format_table(trials, steps: int) -> str:
    """The table: trial, state, node, step (of the budget's), last score, where the current attempt started, retries."""
    header = ("trial", "state", "node", "step", "score", "from step", "retries")
    rows = []
    for t in sorted(trials, key=lambda t: t.config.get("run", "")):
        r = t.last_result or {}
        score = r.get("score")
        rows.append(
            (
                t.config.get("run", t.trial_id),
                t.status,
                str(r.get("node", "-")),
                f"{r['step']}/{steps}" if r.get("step") is not None else f"-/{steps}",
                f"{score:.1f}" if isinstance(score, (int, float)) else "-",
                str(r.get("resumed_from", "-")),
                str(t.num_failures),
            )
        )
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    counts = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    return "\n".join([time.strftime("%H:%M:%S ") + summary, line(header)] + [line(r) for r in rows])


class LiveTable(Callback):
    def __init__(self, steps: int, every_s: float = 10.0):
        self.steps, self.every_s, self.last = steps, every_s, 0.0

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(format_table(trials, self.steps), file=sys.stdout, flush=True)

    def on_experiment_end(self, trials, **info):
        print(format_table(trials, self.steps), file=sys.stdout, flush=True)
