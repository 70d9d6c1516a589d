"""One trial of a sweep: one ``kfc_lite.train`` run folder, started, resumed or found finished.

The run folder, not Ray Tune's checkpoint, is where a trial's state lives: ``train(resume=True)`` continues it
from its last good checkpoint and drops the metrics rows logged after it, so a trial whose process or node died
and that Tune starts again (``FailureConfig.max_failures``) counts no step twice and loses none. The same folder is
what ``kfc-lite train --resume`` would continue by hand.

**One writer, also across a retry.** A run folder has one owner at a time (:func:`kfc_lite.train.run_folder.owned`, an
``flock`` on ``<run>/.lock``), and ``train()`` refuses a folder that another process holds. A retried trial can
meet the process of its previous attempt still holding it: Tune gives up on an attempt as soon as Ray reports its
node or actor dead, and a process that Ray counts as dead (its node cut off from the cluster, not powered off) runs
until its raylet notices and stops it. So a trial does not fail on a held folder: it waits up to
:data:`LOCK_WAIT_S` for the folder to be let go, then takes it, and only then reads the checkpoint it starts from
and records its start. Waiting longer than that fails the attempt with the holder's process and node named, and
Tune counts it like any other failure. When the previous process was killed with its node, the kernel has already
dropped its lock and nothing is waited for.

Each start of the trial appends a line to ``sweep-attempts.jsonl`` in the run folder: the node, the process and
the step it started from. That is how a sweep shows on which nodes its trials ran, and that a retried trial
resumed from its checkpoint instead of starting over. The line is written while the trial owns the folder, so the
step is the one ``train()`` then starts from.

``train()`` runs in a thread, which owns the folder for as long as it writes; the trial's own thread reads new
lines of ``metrics.jsonl`` every second and reports the last step and score to Tune, which shows them in the live
table.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import sys
import threading
import time

ATTEMPTS = "sweep-attempts.jsonl"
POLL_S = 1.0
#: How long a trial waits for its run folder to be let go by another process (seconds). A partitioned node's raylet
#: gives up on the cluster and stops its workers within about a minute of losing it (Ray's GCS reconnection timeout
#: is 60 s by default); three minutes covers that with room for a slow file system.
LOCK_WAIT_S = 180.0


def finished_step(run_dir: pathlib.Path) -> int | None:
    """The step a finished run reached (``result.json`` is written by ``train()`` at its end), else None."""
    path = pathlib.Path(run_dir) / "result.json"
    return int(json.loads(path.read_text())["step"]) if path.is_file() else None


def is_finished(run_dir: pathlib.Path, steps: int) -> bool:
    """Whether the run in ``run_dir`` finished ``steps`` gradient steps (a shorter finished run is continued)."""
    return (finished_step(run_dir) or 0) >= steps


def checkpoint_step(run_dir: pathlib.Path) -> int | None:
    """The step a resumed run starts from: that of its latest good checkpoint (0: none yet; None: none usable).

    Read with the verified loader that ``train()`` uses, so a damaged latest checkpoint gives the step of the
    previous one, which is where ``train()`` then resumes. Call it while owning the folder
    (:func:`hold_run_folder`): its owner rotates the pair (``checkpoint.pt`` becomes ``checkpoint.prev.pt``) as it
    writes a new one, and a reader between the two renames would find no latest checkpoint. None when the files
    exist but none can be used; ``train()`` then stops with the sentence that says why.
    """
    from kfc_lite.files import CheckpointError, load_verified
    from kfc_lite.train.run_folder import CHECKPOINT_NAME

    try:
        found = load_verified(pathlib.Path(run_dir) / CHECKPOINT_NAME, what="training checkpoint")
    except CheckpointError:
        return None
    return 0 if found is None else int(found.obj["step"])


def read_attempts(run_dir: pathlib.Path) -> list[dict]:
    path = pathlib.Path(run_dir) / ATTEMPTS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _holder(run_dir: pathlib.Path) -> str:
    """Who holds ``run_dir``, in words: the process in its lock file, and the node of the attempt that was it."""
    from kfc_lite.train.run_folder import LOCK_NAME

    try:
        pid = (run_dir / LOCK_NAME).read_text().strip()
    except OSError:
        pid = ""
    pid = pid if pid.isdigit() else "unknown"
    where = [a for a in read_attempts(run_dir) if str(a.get("pid")) == pid]
    node = f" on node {where[-1]['node']} (attempt {where[-1]['attempt']} of this trial)" if where else ""
    return f"process {pid}{node}"


@contextlib.contextmanager
def hold_run_folder(run_dir, wait_s: float = LOCK_WAIT_S, poll_s: float = 1.0, stream=None):
    """Own ``run_dir`` (:func:`kfc_lite.train.run_folder.owned`) for the ``with`` block, waiting up to ``wait_s``
    seconds for another process to let it go; the wait is said once on ``stream`` (default stderr).

    Raises :class:`kfc_lite.train.run_folder.RunLockedError` naming the holder when it still holds the folder by then.
    """
    from kfc_lite.train.run_folder import RunLockedError, owned

    run_dir = pathlib.Path(run_dir)
    deadline = time.monotonic() + wait_s
    stack, said = contextlib.ExitStack(), False
    while True:
        try:
            stack.enter_context(owned(run_dir, create=True))
            break
        except RunLockedError:
            if time.monotonic() >= deadline:
                raise RunLockedError(
                    f"{run_dir} is still held by {_holder(run_dir)} after {wait_s:g} s, so this attempt did not "
                    "start: two processes writing one run folder would mix their results. If that node was cut off "
                    "from the cluster, its process stops when its raylet notices; otherwise stop the process. Tune "
                    "retries the trial (max_failures); once those are used up, `kfc-lite sweep FILE --resume` "
                    "continues it"
                ) from None
            if not said:
                print(
                    f"{run_dir} is held by {_holder(run_dir)}; waiting up to {wait_s:g} s for it to be let go",
                    file=stream or sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(poll_s)
    with stack:
        yield


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


def run_trial(config: dict, *, trials: dict, lock_wait_s: float = LOCK_WAIT_S) -> None:
    """Tune's function trainable: ``config["run"]`` names the trial; ``trials`` maps names to TrainConfig dicts."""
    from ray import tune

    from kfc_lite.train import TrainConfig, train

    cfg = TrainConfig.from_dict(dict(trials[config["run"]]))
    run_dir = pathlib.Path(cfg.out)
    node = this_node()
    if is_finished(run_dir, cfg.steps):  # finished by an earlier call of the sweep: nothing to train
        done = finished_step(run_dir)
        tune.report({"step": done, "score": _last_score(run_dir), "node": node["node"], "resumed_from": done})
        return
    run_dir.mkdir(parents=True, exist_ok=True)

    failure: list[BaseException] = []
    started: dict = {}  # the step this attempt starts from, once it owns the folder

    def work():
        try:
            # train()'s own prints (the Koopman report, the table) and the wait for the folder go to the run
            # folder, not the sweep's terminal
            with (
                open(run_dir / "train.log", "a") as log,
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
                hold_run_folder(run_dir, lock_wait_s, stream=log),
            ):
                # the previous owner may have finished the run while this attempt waited for it
                if is_finished(run_dir, cfg.steps):
                    started["from"] = cfg.steps
                    return
                started["from"] = start = checkpoint_step(run_dir)
                attempt = {
                    "attempt": len(read_attempts(run_dir)) + 1,
                    **node,
                    "pid": os.getpid(),
                    "start_step": start,
                    "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
                with open(run_dir / ATTEMPTS, "a") as f:
                    f.write(json.dumps(attempt) + "\n")
                # train() takes the folder again: re-entrant within this process, so it is not let go in between
                train(cfg, resume=(run_dir / "config.json").is_file(), progress=False)
        except BaseException as exc:  # re-raised in the trial's thread, where Tune sees it
            failure.append(exc)

    t0 = time.perf_counter()
    worker = threading.Thread(target=work, name=f"train {config['run']}", daemon=True)
    worker.start()
    tail, step, score = MetricsTail(run_dir / "metrics.jsonl"), None, _last_score(run_dir)
    while worker.is_alive():
        worker.join(POLL_S)
        if "from" not in started:  # still waiting for the folder: its metrics are another process's
            continue
        rows = tail.rows()
        if rows:
            step = max(r["step"] for r in rows)
            evals = [r for r in rows if r["kind"] == "eval"]
            score = evals[-1]["normalized"] if evals else score
            tune.report({"step": step, "score": score, "node": node["node"], "resumed_from": started["from"]})
    if failure:
        raise failure[0]
    _add_wall_time(run_dir, time.perf_counter() - t0)
    tune.report(
        {
            "step": finished_step(run_dir),
            "score": _last_score(run_dir),
            "node": node["node"],
            "resumed_from": started.get("from"),
        }
    )


def _last_score(run_dir: pathlib.Path):
    path = run_dir / "result.json"
    return json.loads(path.read_text()).get("final_normalized") if path.is_file() else None


def _add_wall_time(run_dir: pathlib.Path, seconds: float) -> None:
    """wall.json: the seconds every attempt spent in its trial, summed (the report's wall time per run)."""
    path = run_dir / "wall.json"
    spent = json.loads(path.read_text())["wall_s"] if path.is_file() else 0.0
    path.write_text(json.dumps({"wall_s": spent + seconds}))
