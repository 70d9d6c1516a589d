"""A sweep trial's hold on its run folder (kfc_lite.sweep.trial), without Ray: the wait for a previous attempt's
process to let the folder go, the error when it does not, and the step a retry starts from."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from kfc_lite.files import save_verified
from kfc_lite.sweep.trial import ATTEMPTS, checkpoint_step, hold_run_folder
from kfc_lite.train.run_folder import RunLockedError

# Holds a run folder the way a trial's process does, says so on stdout, and lets go after argv[2] seconds by ending
HOLDER = """
import sys, time
from kfc_lite.train.run_folder import owned
with owned(sys.argv[1], create=True):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def holder(tmp_path):
    """Start a process that holds ``run`` for ``seconds``; every process started is ended at the end of the test."""
    started = []

    def start(run, seconds: float, node: str = "127.0.0.1:40001") -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(run), str(seconds)], stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        assert proc.stdout.readline().strip() == "holding"
        # what a trial records before training: the previous attempt ran as this process on this node
        with open(run / ATTEMPTS, "a") as f:
            f.write(json.dumps({"attempt": 1, "node": node, "pid": proc.pid, "start_step": 0}) + "\n")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_retry_waits_for_the_previous_attempt_to_let_the_folder_go(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run, 1.5)
    said = io.StringIO()
    t0 = time.monotonic()
    with hold_run_folder(run, wait_s=30, poll_s=0.1, stream=said):
        waited = time.monotonic() - t0
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert 1.0 < waited < 20, waited  # the holder let go when its 1.5 s were over, not before
    assert proc.wait(timeout=10) == 0
    assert f"held by process {proc.pid} on node 127.0.0.1:40001 (attempt 1 of this trial)" in said.getvalue()


def test_a_folder_held_past_the_wait_fails_the_attempt_naming_the_holder(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run, 60)
    t0 = time.monotonic()
    with pytest.raises(RunLockedError) as err:
        with hold_run_folder(run, wait_s=0.5, poll_s=0.1, stream=io.StringIO()):
            pytest.fail("the folder was taken from a live owner")
    assert time.monotonic() - t0 < 10
    message = str(err.value)
    assert f"still held by process {proc.pid} on node 127.0.0.1:40001" in message and "after 0.5 s" in message
    assert "--resume" in message
    assert proc.poll() is None  # still running, still the owner
    assert (run / ".lock").read_text().strip() == str(proc.pid)


def test_a_free_folder_is_taken_at_once_and_is_reentrant_for_train(tmp_path):
    from kfc_lite.train.run_folder import owned

    run = tmp_path / "new" / "run"
    said = io.StringIO()
    with hold_run_folder(run, wait_s=0, stream=said):
        with owned(run, create=False):  # what train() does inside the trial: the same process, no refusal
            pass
        assert (run / ".lock").read_text().strip() == str(os.getpid())
    assert said.getvalue() == ""
    assert (run / ".lock").read_text() == ""  # let go


def test_checkpoint_step_is_where_train_resumes(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert checkpoint_step(run) == 0  # no checkpoint yet: from the start
    for step in (60, 120):
        save_verified(
            {"format": "test", "step": step, "w": torch.zeros(3)}, run / "checkpoint.pt", label=f"step {step}"
        )
    assert checkpoint_step(run) == 120
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[-20] ^= 0xFF
    (run / "checkpoint.pt").write_bytes(bytes(data))
    assert checkpoint_step(run) == 60  # a damaged latest: train() falls back to the previous one, and so does this
    (run / "checkpoint.prev.pt").write_bytes(b"not a checkpoint")
    assert checkpoint_step(run) is None  # none usable: train() says why
