"""One trial of a sweep: one ``kfc_lite.train`` run folder, started, resumed or found finished.

The run folder, not Ray Tune's checkpoint, is where a trial's state lives: ``train(resume=True)`` continues it
from ``checkpoint.pt`` and drops the metrics rows logged after that checkpoint, so a trial whose process or node
died and that Tune starts again (``FailureConfig.max_failures``) counts no step twice and loses none. The same
folder is what ``kfc-lite train --resume`` would continue by hand.

Each start of the trial appends a line to ``sweep-attempts.jsonl`` in the run folder: the node, the process and
the step it started from. That is how a sweep shows on which nodes its trials ran, and that a retried trial
resumed from its checkpoint instead of starting over.

``train()`` runs in a thread; the trial's own thread reads new lines of ``metrics.jsonl`` every second and
reports the last step and score to Tune, which shows them in the live table.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import threading
import time

ATTEMPTS = "sweep-attempts.jsonl"
POLL_S = 1.0


def finished_step(run_dir: pathlib.Path) -> int | None:
    """The step a finished run reached (``result.json`` is written by ``train()`` at its end), else None."""
    path = pathlib.Path(run_dir) / "result.json"
    return int(json.loads(path.read_text())["step"]) if path.is_file() else None


def checkpoint_step(run_dir: pathlib.Path) -> int:
    """The step of the run's last checkpoint (0: none yet), i.e. where a resumed run starts."""
    import torch

    path = pathlib.Path(run_dir) / "checkpoint.pt"
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["step"])


def read_attempts(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def this_node() -> dict:
    """Which Ray node runs this process: its id, and address:port of its raylet (unique even on one host)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for n in ray.nodes():
        if n["NodeID"] == node_id:
            return {"node_id": node_id, "node": f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}"}
    return {"node_id": node_id, "node": socket.gethostname()}


class MetricsTail:
    """The new rows of a metrics.jsonl since the last call; starts over when the file shrinks (a resume truncates)."""

    def __init__(self, path: pathlib.Path):
        self.path, self.offset = path, 0

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        size = self.path.stat().st_size
        if size < self.offset:
            self.offset = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        return [json.loads(line) for line in chunk[:end].decode().splitlines() if line.strip()]


def run_trial(config: dict, *, trials: dict) -> None:
    """Tune's function trainable: ``config["run"]`` names the trial; ``trials`` maps names to TrainConfig dicts."""
    from ray import tune

    from kfc_lite.train import TrainConfig, train

    cfg = TrainConfig.from_dict(dict(trials[config["run"]]))
    run_dir = pathlib.Path(cfg.out)
    node = this_node()
    done = finished_step(run_dir)
    if done is not None and done >= cfg.steps:  # finished by an earlier call of the sweep: nothing to train
        tune.report({"step": done, "score": _last_score(run_dir), "node": node["node"], "resumed_from": done})
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    start = checkpoint_step(run_dir)
    attempt = {"attempt": len(read_attempts(run_dir)) + 1, **node, "pid": os.getpid(), "start_step": start,
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(run_dir / ATTEMPTS, "a") as f:
        f.write(json.dumps(attempt) + "\n")

    failure: list[BaseException] = []

    def work():
        try:
            # train()'s own prints (the Koopman report, the table) go to the run folder, not the sweep's terminal
            with open(run_dir / "train.log", "a") as log, contextlib.redirect_stdout(log), \
                    contextlib.redirect_stderr(log):
                train(cfg, resume=(run_dir / "config.json").is_file(), progress=False)
        except BaseException as exc:  # re-raised in the trial's thread, where Tune sees it
            failure.append(exc)

    t0 = time.perf_counter()
    worker = threading.Thread(target=work, name=f"train {config['run']}", daemon=True)
    worker.start()
    tail, step, score = MetricsTail(run_dir / "metrics.jsonl"), start, _last_score(run_dir)
    while worker.is_alive():
        worker.join(POLL_S)
        rows = tail.rows()
        if rows:
            step = max(r["step"] for r in rows)
            evals = [r for r in rows if r["kind"] == "eval"]
            score = evals[-1]["normalized"] if evals else score
            tune.report({"step": step, "score": score, "node": node["node"], "resumed_from": start})
    if failure:
        raise failure[0]
    _add_wall_time(run_dir, time.perf_counter() - t0)
    tune.report({"step": finished_step(run_dir), "score": _last_score(run_dir), "node": node["node"],
                 "resumed_from": start})


def _last_score(run_dir: pathlib.Path):
    path = run_dir / "result.json"
    return json.loads(path.read_text()).get("final_normalized") if path.is_file() else None


def _add_wall_time(run_dir: pathlib.Path, seconds: float) -> None:
    """wall.json: the seconds every attempt spent in its trial, summed (the report's wall time per run)."""
    path = run_dir / "wall.json"
    spent = json.loads(path.read_text())["wall_s"] if path.is_file() else 0.0
    path.write_text(json.dumps({"wall_s": spent + seconds}))
