"""Run folders that cannot be corrupted (kfc_lite.train.run_folder, kfc_lite.files): one owner, verified checkpoints
kept in pairs, runs that go non-finite stop, resumes that refuse what they cannot honour, Koopman pre-training that
resumes. Each case goes through the command line and checks the exit code, the message and that nothing was lost."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import checkpoint_tensors

from kfc_lite.cli import main as cli_main
from kfc_lite.files import checksum_path, load_verified, previous_path, save_verified
from kfc_lite.train import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = [
    "--device",
    "cpu",
    "--no-progress",
    "--set",
    "eval_episodes=0",
    "--set",
    "log_every=3",
    "--set",
    "checkpoint_every=6",
    "--set",
    "hidden=[16,16]",
    "--set",
    "batch_size=16",
    "--set",
    "bc_steps=2",
]
TINY_KOOPMAN = [
    "--set",
    "koopman.hidden_dim=16",
    "--set",
    "koopman.latent_dim=4",
    "--set",
    "koopman.multistep_k=2",
    "--set",
    "koopman.max_epochs=4",
    "--set",
    "koopman.early_stopping=false",
    "--set",
    "table_storage=float32",
]


def cli(capsys, *args):
    """Run ``kfc-lite`` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli_main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def train_args(dataset, out, steps, method="cql", *extra):
    return ["train", "--dataset", dataset, "--method", method, "--steps", steps, "--out", out, *TINY, *extra]


def snapshot(folder: pathlib.Path) -> dict:
    """Every file under ``folder`` and its bytes (the lock file aside: it is the owner's, not the run's)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def tensors(path) -> dict:
    return checkpoint_tensors(path)[1]


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# -- the checkpoint pair -----------------------------------------------------------------------------------------
def test_checkpoint_pair_rotates_and_verifies(tmp_path):
    path = tmp_path / "c.pt"
    assert load_verified(path) is None
    save_verified({"step": 1}, path, label="step 1")
    save_verified({"step": 2}, path, label="step 2")
    save_verified({"step": 3}, path, label="step 3")
    assert torch.load(path, weights_only=True) == {"step": 3}  # still a plain torch file
    assert torch.load(previous_path(path), weights_only=True) == {"step": 2}
    sums = json.loads(checksum_path(path).read_text())["files"]
    assert [sums["latest"]["label"], sums["previous"]["label"]] == ["step 3", "step 2"]
    found = load_verified(path)
    assert found.obj == {"step": 3} and not found.fell_back and found.label == "step 3"
    # one flipped byte in the latest: the previous one is loaded, and the reason named
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    found = load_verified(path)
    assert found.obj == {"step": 2} and found.path == previous_path(path)
    assert f"{path} is damaged" in found.problems[0]
    # a stop between the two renames of a rotation (the latest moved to previous, the new one not yet in place)
    pair = tmp_path / "pair" / "c.pt"
    save_verified({"step": 1}, pair)
    save_verified({"step": 2}, pair)
    import kfc_lite.files as files_module

    real_replace, calls = os.replace, []

    def stop_at_the_second_rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # checksums, latest -> previous, then this: the new file into place
            raise KeyboardInterrupt
        real_replace(src, dst)

    files_module.os.replace = stop_at_the_second_rename
    try:
        with pytest.raises(KeyboardInterrupt):
            save_verified({"step": 3}, pair)
    finally:
        files_module.os.replace = real_replace
    assert not pair.exists()
    found = load_verified(pair)
    assert found.obj == {"step": 2} and found.problems == [f"{pair} is missing"]


def test_failed_checkpoint_write_leaves_the_pair_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_verified({"step": 1}, path, label="step 1")
    before = snapshot(tmp_path)

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    from kfc_lite.files import CheckpointWriteError

    with pytest.raises(
        CheckpointWriteError,
        match=r"c\.pt: No space left on device\. The latest checkpoint, c\.pt \(step 1\), is untouched",
    ):
        save_verified({"step": 2}, path, label="step 2")
    assert snapshot(tmp_path) == before


# -- 1. a damaged checkpoint --------------------------------------------------------------------------------------
def test_damaged_checkpoint_is_reported_and_the_previous_one_resumes_bit_exactly(dataset, tmp_path, capsys):
    straight, run = tmp_path / "straight", tmp_path / "run"
    assert cli(capsys, *train_args(dataset, straight, 18))[0] == 0
    assert cli(capsys, *train_args(dataset, run, 12))[0] == 0
    ckpt = run / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(b ^ 0xA5 for b in data[mid : mid + 64])  # 64 bytes flipped in the middle
    ckpt.write_bytes(bytes(data))
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 18, "--no-progress")
    assert code == 0, err
    assert f"{ckpt} is damaged" in err and "Resuming from checkpoint.prev.pt (step 6)" in err
    assert (run / "checkpoint.pt.damaged").read_bytes() == bytes(data)  # kept for inspection
    assert_same_tensors(tensors(run / "checkpoint.pt"), tensors(straight / "checkpoint.pt"))
    steps = [r["step"] for r in read_metrics(run, "train")]
    assert steps == [3, 6, 9, 12, 15, 18]
    assert all(np.isfinite(r["critic_loss"]) for r in read_metrics(run, "train"))


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_no_good_checkpoint_refuses_with_the_fix_and_changes_nothing(dataset, tmp_path, capsys, damage):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 12))[0] == 0
    for path in (run / "checkpoint.pt", run / "checkpoint.prev.pt"):
        data = path.read_bytes()
        path.write_bytes({"truncated": data[: len(data) // 3], "empty": b"", "garbage": os.urandom(len(data))}[damage])
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 18, "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert "no usable training checkpoint" in err
    assert f"{run / 'checkpoint.pt'} is damaged" in err and f"{run / 'checkpoint.prev.pt'} is damaged" in err
    assert "Start the run again in another --out folder" in err
    assert snapshot(run) == before


def test_unverified_old_checkpoint_that_torch_cannot_read_is_a_sentence(dataset, tmp_path, capsys):
    """A folder from before checksums (no checkpoint.sha256): torch's own error, inside a sentence with the path."""
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    (run / "checkpoint.sha256").unlink()
    (run / "checkpoint.pt").write_bytes(b"not a zip file at all")
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 12, "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert f"{run / 'checkpoint.pt'} cannot be read as a training checkpoint" in err


# -- 2. one writer per run folder ---------------------------------------------------------------------------------
def hold_folder(run: pathlib.Path) -> subprocess.Popen:
    """Another process that owns ``run`` (as a running `kfc-lite train` would), until it is killed."""
    code = (
        "import sys, time\nfrom kfc_lite.train.run_folder import owned\n"
        "with owned(sys.argv[1], create=True):\n    print('held', flush=True)\n    time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_owners_pid_and_a_dead_owner_is_taken_over(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    owner = hold_folder(run)
    try:
        code, _, err = cli(capsys, *train_args(dataset, run, 6, "s4rl", "--seed", 1))
        assert code == 1 and f"{run} is in use by another process (pid {owner.pid}" in err
        assert f"kill {owner.pid}" in err and "choose another --out" in err
        assert snapshot(run) == {}  # nothing read or written by the refused run
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert owner.returncode == -signal.SIGKILL
    assert (run / ".lock").read_text().strip() == str(owner.pid)  # what kill -9 leaves behind
    code, _, err = cli(capsys, *train_args(dataset, run, 6))
    assert code == 0, err
    assert f"names process {owner.pid}, which ended without releasing {run}" in err
    assert (run / ".lock").read_text() == ""  # released on exit


def test_resume_while_the_run_is_going_is_refused(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    before = snapshot(run)
    owner = hold_folder(run)  # the original run, still going
    try:
        code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 12, "--no-progress")
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert code == 1 and f"in use by another process (pid {owner.pid}" in err
    assert snapshot(run) == before


def test_killed_run_resumes_past_its_stale_lock_and_temp_file(dataset, tmp_path, capsys):
    """kill -9 of a real `kfc-lite train` mid-run: the next --resume explains the lock it finds, removes the
    temporary file a killed write leaves, and continues from the checkpoint with every step logged once."""
    run = tmp_path / "run"
    args = train_args(dataset, run, 100_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kfc_lite", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoint.prev.pt").is_file():  # two checkpoints written
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (run / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04")  # what a kill during a checkpoint write leaves
    at = int(torch.load(run / "checkpoint.pt", weights_only=True)["step"])
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", at + 6, "--no-progress")
    assert code == 0, err
    assert f"names process {proc.pid}, which ended without releasing" in err
    # the planted file, and one more where the kill fell inside a real checkpoint write: every one is removed
    removed = re.search(r"removed (\d+) temporary file\(s\) .* by a stopped write: (.*)", err)
    assert removed and ".checkpoint.pt.k1ll3d.tmp" in removed.group(2).split(", "), err
    assert int(removed.group(1)) == len(removed.group(2).split(", ")) and not list(run.glob(".*.tmp"))
    steps = [r["step"] for r in read_metrics(run, "train")]
    assert steps == list(range(3, at + 7, 3))


# -- 3. a torn metrics line ---------------------------------------------------------------------------------------
def test_resume_drops_a_torn_last_metrics_line_and_says_so(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "step": 9, "critic_loss": 0.1')  # the disk filled during this write
    with pytest.warns(RuntimeWarning, match="last line is incomplete"):
        assert [r["step"] for r in read_metrics(run)] == [3, 6]
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 12, "--no-progress")
    assert code == 0, err
    assert f"the last line of {run / 'metrics.jsonl'} was cut off by a stopped write" in err
    assert [r["step"] for r in read_metrics(run)] == [3, 6, 9, 12]


def test_a_damaged_line_inside_metrics_is_named(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0][:20]] + lines[1:]) + "\n")
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 12, "--no-progress")
    assert code == 1 and f"{run / 'metrics.jsonl'}, line 1 is not a metrics row" in err
    assert snapshot(run) == before


# -- 4. resume without a checkpoint, or without config.json --------------------------------------------------------
def test_resume_without_checkpoints_refuses_and_keeps_everything(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 12))[0] == 0
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.prev.pt").unlink()
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 18, "--no-progress")
    assert code == 1 and "its checkpoints (checkpoint.pt, checkpoint.prev.pt) are gone" in err
    assert "start from step 0" in err and "another --out folder" in err
    assert snapshot(run) == before and len(read_metrics(run, "train")) == 4


def test_run_stopped_before_its_first_checkpoint_starts_again_and_says_so(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    for name in ("checkpoint.pt", "checkpoint.sha256", "policy.pt", "result.json"):
        (run / name).unlink()  # as it was before its first checkpoint: config.json and metrics rows only
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 6, "--no-progress")
    assert code == 0 and "stopped before its first checkpoint: it starts again from step 0" in err
    assert [r["step"] for r in read_metrics(run, "train")] == [3, 6]


def test_missing_config_gets_one_message_with_or_without_resume(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
    (run / "config.json").unlink()
    before = snapshot(run)
    _, _, fresh = cli(capsys, *train_args(dataset, run, 6))
    code, _, resumed = cli(capsys, "train", "--out", run, "--resume", "--no-progress")
    assert code == 1
    for err in (fresh, resumed):
        assert "but no config.json" in err and "Put its config.json back, or start in another --out folder" in err
        assert "--resume" not in err  # neither message sends the user to the other command
    assert snapshot(run) == before


def test_nothing_to_resume(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--out", tmp_path / "none", "--resume", "--no-progress")
    assert code == 1 and "nothing to resume" in err and "no such folder" in err
    assert not (tmp_path / "none").exists()


# -- 6. what resume cannot honour, divergence, pre-training, errors in words ----------------------------------------
def test_resume_to_fewer_steps_refuses_and_keeps_the_config(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, run, 12))[0] == 0
    before = snapshot(run)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--steps", 6, "--no-progress")
    assert code == 1 and "is at step 12 (checkpoint.pt) and --steps 6 is below it" in err
    assert "--steps 12 or more" in err
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--method", "s4rl", "--no-progress")
    assert code == 1 and "different config (method" in err and "another --out folder" in err
    assert snapshot(run) == before


@pytest.mark.parametrize(
    "lr, every, found, kept",
    [
        (1e4, 3, "training diverged at step 3: critic_loss = nan", None),
        (
            10.0,
            1,
            "training diverged at step 2: agent.actor_optimizer.state.0.exp_avg_sq holds NaN or infinite values",
            1,
        ),
    ],
)
def test_diverging_run_stops_names_step_and_loss_and_keeps_the_last_good_checkpoint(
    dataset, tmp_path, capsys, lr, every, found, kept
):
    """A NaN in a logged loss is caught at its log step; one in the parameters (here Adam's second moments, between
    log steps) before the next checkpoint: either way the run stops, and no checkpoint or policy holds it."""
    run = tmp_path / "run"
    code, _, err = cli(
        capsys,
        *train_args(
            dataset,
            run,
            60,
            "cql",
            "--set",
            f"q_lr={lr}",
            "--set",
            f"policy_lr={lr}",
            "--set",
            f"checkpoint_every={every}",
        ),
    )
    assert code == 1 and "Traceback" not in err
    assert found in err and "start again in another --out folder" in err
    assert not (run / "policy.pt").exists()
    if kept is None:
        assert "no checkpoint had been written" in err and not (run / "checkpoint.pt").exists()
    else:
        assert f"checkpoint.pt (step {kept}) is the last good checkpoint and was not overwritten" in err
        last = load_verified(run / "checkpoint.pt")
        assert last.obj["step"] == kept and run_folder_first_nonfinite(last.obj["agent"]) is None
    if (run / "metrics.jsonl").exists():
        assert all(np.isfinite(r["critic_loss"]) for r in read_metrics(run, "train"))


def run_folder_first_nonfinite(state):
    from kfc_lite.train.run_folder import first_nonfinite

    return first_nonfinite(state)


def test_huge_observations_are_refused_before_training(dataset, tmp_path, capsys):
    import shutil

    import h5py

    bad = tmp_path / "huge.hdf5"
    shutil.copyfile(dataset, bad)
    with h5py.File(bad, "r+") as f:
        f["observations"][5, 0] = 1e30
    code, _, err = cli(capsys, *train_args(str(bad), tmp_path / "run", 6))
    assert code == 1 and "observations" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "config.json").exists()


def test_kfc_run_stopped_during_koopman_pretraining_resumes_it(dataset, tmp_path, capsys, monkeypatch):
    from kfc_lite.koopman import fit as fit_module

    straight, run = tmp_path / "straight", tmp_path / "run"
    assert cli(capsys, *train_args(dataset, straight, 6, "kfc++"), *TINY_KOOPMAN)[0] == 0
    real = fit_module.multistep_error
    calls = []

    def stop_in_epoch_3(*a, **k):  # Ctrl-C during the third epoch of pre-training
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(fit_module, "multistep_error", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        cli(capsys, *train_args(dataset, run, 6, "kfc++"), *TINY_KOOPMAN)
    monkeypatch.setattr(fit_module, "multistep_error", real)
    assert torch.load(run / "koopman.partial.pt", weights_only=True)["epoch"] == 2
    assert not (run / "koopman.pt").exists() and (run / ".lock").read_text() == ""
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--no-progress")
    assert code == 0, err
    assert "Koopman pre-training continues after epoch 2" in err
    assert not (run / "koopman.partial.pt").exists() and not (run / "koopman.partial.sha256").exists()
    a = torch.load(straight / "koopman.pt", weights_only=True)["state_dict"]
    b = torch.load(run / "koopman.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert_same_tensors(tensors(run / "checkpoint.pt"), tensors(straight / "checkpoint.pt"))


def test_fit_koopman_resumes_bit_exactly_from_its_checkpoint(tmp_path, monkeypatch):
    from kfc_lite.koopman import fit as fit_module
    from kfc_lite.koopman.fit import KoopmanTrainConfig, fit_koopman

    rng = np.random.default_rng(0)
    n = 300
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    data = {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        "next_observations": (0.9 * obs + 0.01).astype(np.float32),
        "terminals": np.zeros(n, bool),
    }
    cfg = KoopmanTrainConfig(
        latent_dim=4,
        hidden_dim=8,
        batch_size=64,
        max_epochs=5,
        early_stopping=False,
        multistep_k=2,
        lr_decay_start=3,
        lr_decay_every=2,
    )  # a decay inside the resumed part
    straight, hist_a = fit_koopman(data, cfg, device="cpu", progress=False)
    real = fit_module._mean_losses  # once per epoch, after its minibatches

    def stop_in_epoch_4(*a, **k):
        stop_in_epoch_4.calls += 1
        if stop_in_epoch_4.calls == 4:
            raise KeyboardInterrupt
        return real(*a, **k)

    stop_in_epoch_4.calls = 0
    monkeypatch.setattr(fit_module, "_mean_losses", stop_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        fit_koopman(data, cfg, device="cpu", progress=False, checkpoint=tmp_path / "k.pt", checkpoint_every=1)
    monkeypatch.setattr(fit_module, "_mean_losses", real)
    assert torch.load(tmp_path / "k.pt", weights_only=True)["epoch"] == 3
    resumed, hist_b = fit_koopman(data, cfg, device="cpu", progress=False, checkpoint=tmp_path / "k.pt")
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    assert hist_a["val_forward"] == hist_b["val_forward"] and hist_b["epoch"] == [1, 2, 3, 4, 5]
    other = KoopmanTrainConfig(
        latent_dim=4, hidden_dim=8, batch_size=64, max_epochs=6, early_stopping=False, multistep_k=2
    )
    with pytest.raises(ValueError, match="other settings or other data: delete"):
        fit_koopman(data, other, device="cpu", progress=False, checkpoint=tmp_path / "k.pt")


@pytest.mark.parametrize("case", ["out-is-a-file", "steps-twice", "set-out-on-resume", "corrupt-config"])
def test_user_errors_are_sentences(dataset, tmp_path, capsys, case):
    run = tmp_path / "run"
    if case == "out-is-a-file":
        run.write_text("my notes")
        code, _, err = cli(capsys, *train_args(dataset, run, 6))
        assert "is a file, not a folder" in err and run.read_text() == "my notes"
    elif case == "steps-twice":
        code, _, err = cli(capsys, *train_args(dataset, run, 6, "cql", "--set", "steps=20"))
        assert "given twice: --steps 6 and --set steps=20" in err and not run.exists()
    else:
        assert cli(capsys, *train_args(dataset, run, 6))[0] == 0
        if case == "corrupt-config":
            (run / "config.json").write_text('{"train": {"dataset": ')
        before = snapshot(run)
        code, _, err = cli(capsys, "train", "--out", run, "--resume", "--no-progress", "--set", "out=elsewhere")
        if case == "set-out-on-resume":
            assert "--set out=elsewhere: the run folder is given by --out" in err
        else:
            code, _, err = cli(capsys, "train", "--out", run, "--resume", "--no-progress")
            assert f"{run / 'config.json'} cannot be read" in err and "Put back a good copy" in err
        assert snapshot(run) == before
    assert code == 1 and "Traceback" not in err


def test_full_disk_during_a_checkpoint_is_a_sentence_and_loses_nothing(dataset, tmp_path, capsys):
    """A real write error (the file-size limit, EFBIG, as a full disk gives ENOSPC) inside torch's writer."""
    import resource

    run = tmp_path / "run"
    assert cli(capsys, *train_args(dataset, tmp_path / "probe", 6))[0] == 0
    limit = (tmp_path / "probe" / "checkpoint.pt").stat().st_size // 2  # room for everything but a checkpoint

    def small_disk():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "kfc_lite", *map(str, train_args(dataset, run, 12))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=small_disk,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"could not write the checkpoint of step 6 to {run / 'checkpoint.pt'}: File too large" in proc.stderr
    assert "then continue with --resume" in proc.stderr
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert [r["step"] for r in read_metrics(run, "train")] == [3, 6]
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--no-progress")
    assert code == 0, err
    assert [r["step"] for r in read_metrics(run, "train")] == [3, 6, 9, 12]
