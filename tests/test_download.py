"""download(): against a local HTTP server on 127.0.0.1 that serves files the tests make.

The server can honour Range requests, ignore them, cut the connection mid-file, stall, or hold a response until
the test lets it go, so every path of the resumable download is exercised without the network: resuming, files
of the wrong dataset (fresh or cached), two processes on one file, and a server that stops sending.
"""

import fcntl
import http.server
import os
import pathlib
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from kfc_lite.data import DatasetError, DownloadError, download, load, registry, write_hdf5
from kfc_lite.data.download import file_digest
from kfc_lite.data.errors import DatasetMismatchError, DownloadLockedError

NAME = "hopper-medium-v2"
FILE = "hopper_medium-v2.hdf5"  # the registry's (and D4RL's) file name for NAME
ROOT = pathlib.Path(__file__).resolve().parents[1]


def d4rl_like(family: str, rows: int, seed: int = 0, **metadata) -> dict:
    """Data with the shape of a D4RL file of ``family``: its sizes, ``rows`` rows, and a first observation value
    that looks like that robot (a torso height near 1.25 m for hopper and walker2d, near 0 for halfcheetah).

    Mostly constant, so gzip keeps even a full-size (1,000,000-row) file near 250 kB.
    """
    rng = np.random.default_rng(seed)
    obs = np.zeros((rows, registry.OBS_DIM[family]), np.float32)
    obs[:, 0] = 1.25 if family in ("hopper", "walker2d") else -0.1
    obs[::1000, 1:] = rng.normal(size=(len(obs[::1000]), obs.shape[1] - 1))
    data = {
        "observations": obs,
        "actions": np.zeros((rows, registry.ACT_DIM[family]), np.float32),
        "rewards": np.ones(rows, np.float32),
        "terminals": np.zeros(rows, bool),
        "timeouts": np.arange(rows) % 1000 == 999,
        "metadata/algorithm": "test",
    }
    data.update({f"metadata/{k}": v for k, v in metadata.items()})
    return data


def file_bytes(tmp_path, data: dict, name="x.hdf5") -> bytes:
    path = tmp_path / "src" / name
    write_hdf5(data, path)
    return path.read_bytes()


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    mode = "range"  # "range" | "ignore-range" | "cut" | "stall" | "hold"
    cut_after = 0  # "cut", "stall", "hold": bytes sent before closing, going silent, or waiting for ``gate``
    gate = threading.Event()  # "stall" and "hold" wait on it; the fixture sets it, so no handler outlives a test
    requests: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        type(self).requests.append((self.path, self.headers.get("Range")))
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.mode != "ignore-range":
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if self.mode in ("cut", "stall", "hold"):
            self.wfile.write(chunk[: self.cut_after])
            self.wfile.flush()
            if self.mode == "cut":
                self.close_connection = True
                return
            self.gate.wait(30)
            if self.mode == "stall":  # went silent: the client gave up long ago
                self.close_connection = True
                return
            chunk = chunk[self.cut_after :]
        self.wfile.write(chunk)


@pytest.fixture()
def server():
    Handler.files, Handler.mode, Handler.requests, Handler.gate = {}, "range", [], threading.Event()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    Handler.gate.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def dataset_bytes(tmp_path_factory):
    """A stand-in for hopper-medium-v2 that passes its checks (D4RL's 1,000,000 rows, Hopper's sizes), as bytes."""
    return file_bytes(tmp_path_factory.mktemp("d"), d4rl_like("hopper", registry.get(NAME).rows))


def test_full_download_then_cache_hit(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert path == str(tmp_path / FILE)
    assert pathlib.Path(path).read_bytes() == dataset_bytes
    assert not os.path.exists(path + ".part")
    assert len(handler.requests) == 1 and handler.requests[0][1] is None
    # a valid cached file is not fetched again
    assert download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False) == path
    assert len(handler.requests) == 1


def test_default_destination_is_the_d4rl_cache(server, dataset_bytes, tmp_path, monkeypatch):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "cache"))
    path = download(NAME, url=base + "/d.hdf5", progress=False)
    assert path == str(tmp_path / "cache" / FILE)
    data = load(NAME)  # now found in the cache by name
    assert data["observations"].shape == (1_000_000, 11) and data["metadata/d4rl_env"] == NAME


def test_resume_sends_range_and_appends(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    k = len(dataset_bytes) // 3
    (tmp_path / (FILE + ".part")).write_bytes(dataset_bytes[:k])
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert handler.requests == [("/d.hdf5", f"bytes={k}-")]
    assert pathlib.Path(path).read_bytes() == dataset_bytes


def test_server_that_ignores_range_restarts_from_zero(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    handler.mode = "ignore-range"
    (tmp_path / (FILE + ".part")).write_bytes(b"x" * 1000)  # would corrupt the file if appended to
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert handler.requests[0][1] == "bytes=1000-"
    assert pathlib.Path(path).read_bytes() == dataset_bytes


def test_complete_part_file_is_accepted_on_416(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    (tmp_path / (FILE + ".part")).write_bytes(dataset_bytes)
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert pathlib.Path(path).read_bytes() == dataset_bytes


def test_cut_connection_keeps_part_and_rerun_resumes(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    handler.mode, handler.cut_after = "cut", len(dataset_bytes) // 2
    with pytest.raises(DownloadError, match="run the same command again to resume") as err:
        download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert f"{len(dataset_bytes) // 2} of {len(dataset_bytes)} bytes" in str(err.value)
    part = tmp_path / (FILE + ".part")
    assert part.read_bytes() == dataset_bytes[: len(dataset_bytes) // 2]
    assert not (tmp_path / FILE).exists()
    handler.mode = "range"
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert handler.requests[-1][1] == f"bytes={len(dataset_bytes) // 2}-"
    assert pathlib.Path(path).read_bytes() == dataset_bytes and not part.exists()


def test_corrupt_file_is_rejected_and_not_cached(server, tmp_path):
    handler, base = server
    handler.files["/bad.hdf5"] = b"<html>not found, but with status 200</html>" * 50
    with pytest.raises(DatasetError, match="not a readable HDF5 file.*deleted"):
        download(NAME, dest=tmp_path, url=base + "/bad.hdf5", progress=False)
    assert os.listdir(tmp_path) == []


def test_hdf5_that_is_not_a_dataset_is_rejected(server, tmp_path):
    handler, base = server
    src = tmp_path / "src" / "x.hdf5"
    write_hdf5({"something": np.arange(3)}, src)
    handler.files["/x.hdf5"] = src.read_bytes()
    dest = tmp_path / "dest"
    with pytest.raises(DatasetError, match="without observations"):
        download(NAME, dest=dest, url=base + "/x.hdf5", progress=False)
    assert os.listdir(dest) == []


def test_checksum_is_checked(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    with pytest.raises(DatasetError, match="sha256 is"):
        download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False, checksum="sha256:" + "0" * 64)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="not understood"):
        download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False, checksum="crc:12")
    src = tmp_path / "copy.bin"
    src.write_bytes(dataset_bytes)
    good = "md5:" + file_digest(str(src), "md5")
    assert download(NAME, dest=tmp_path / "c", url=base + "/d.hdf5", progress=False, checksum=good)


def test_damaged_cache_file_is_downloaded_again(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    (tmp_path / FILE).write_bytes(dataset_bytes[:500])  # truncated file under the final name
    with pytest.warns(RuntimeWarning, match="downloading it again"):
        path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
    assert pathlib.Path(path).read_bytes() == dataset_bytes


def test_http_errors_and_bad_names(server, tmp_path):
    handler, base = server
    with pytest.raises(DownloadError, match="404"):
        download(NAME, dest=tmp_path, url=base + "/missing.hdf5", progress=False)
    with pytest.raises(DownloadError, match="cannot reach"):
        download(NAME, dest=tmp_path, url="http://127.0.0.1:1/x.hdf5", progress=False, timeout=5)
    with pytest.raises(KeyError, match="hopper-medium-v2"):
        download("hoper-medium-v2", dest=tmp_path)
    with pytest.raises(ValueError, match="kfc-lite data make"):
        download("hopper-random-replica", dest=tmp_path)


def test_cli_download(server, dataset_bytes, tmp_path, capsys):
    from kfc_lite.cli import main

    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    assert main(["data", "download", NAME, "--dest", str(tmp_path), "--url", base + "/d.hdf5", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / FILE)
    assert main(["data", "download", NAME, "--dest", str(tmp_path), "--url", base + "/nope.hdf5"]) == 0  # cached
    assert main(["data", "download", NAME, "--dest", str(tmp_path / "x"), "--url", base + "/nope.hdf5"]) == 1
    assert "404" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the file must be the named dataset
def cli(argv, capsys):
    """``kfc-lite ARGV`` in this process: (exit code, stdout, stderr)."""
    from kfc_lite.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_walker2d_file_served_for_hopper_is_refused_and_not_cached(server, tmp_path, capsys):
    handler, base = server
    handler.files["/w.hdf5"] = file_bytes(tmp_path, d4rl_like("walker2d", 1_000_000))
    dest = tmp_path / "cache"
    code, _, err = cli(
        ["data", "download", NAME, "--dest", str(dest), "--url", base + "/w.hdf5", "--no-progress"], capsys
    )
    assert code == 1
    assert f"the file downloaded from {base}/w.hdf5 is not {NAME}" in err
    assert "expected hopper's sizes, 11-D observations and 3-D actions" in err
    assert "found 17-D observations and 6-D actions (the sizes of halfcheetah or walker2d)" in err
    assert "The download was deleted" in err and "Traceback" not in err
    assert os.listdir(dest) == []  # neither the file, nor its .part, nor the lock


def test_file_of_another_dataset_in_the_cache_is_refused_and_kept(server, dataset_bytes, tmp_path, capsys, monkeypatch):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    walker = file_bytes(tmp_path, d4rl_like("walker2d", 1_000_000))
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / FILE).write_bytes(walker)
    code, _, err = cli(["data", "download", NAME, "--dest", str(cache), "--url", base + "/d.hdf5"], capsys)
    assert code == 1
    assert f"{cache / FILE} is not {NAME}: expected hopper's sizes" in err and "found 17-D observations" in err
    assert f"Fix: delete {cache / FILE} and download it again (`kfc-lite data download {NAME}`)" in err
    assert (cache / FILE).read_bytes() == walker and handler.requests == []  # kept, and nothing fetched over it
    # loading it by name (what training does) is refused the same way, on every cache hit
    monkeypatch.setenv("D4RL_DATASET_DIR", str(cache))
    code, _, err = cli(["data", "info", NAME], capsys)
    assert code == 1 and f"{cache / FILE} is not {NAME}: expected hopper's sizes" in err
    with pytest.raises(DatasetMismatchError):
        load(NAME)
    assert (cache / FILE).read_bytes() == walker


def test_row_count_of_d4rl_files_is_checked(server, tmp_path, capsys):
    assert registry.get(NAME).rows == 1_000_000
    handler, base = server
    short = file_bytes(tmp_path, d4rl_like("hopper", 3000))
    handler.files["/short.hdf5"] = short
    code, _, err = cli(["data", "download", NAME, "--dest", str(tmp_path / "a"), "--url", base + "/short.hdf5"], capsys)
    assert code == 1 and "expected D4RL's row count, 1000000 rows, found 3000 rows" in err
    assert os.listdir(tmp_path / "a") == []
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / FILE).write_bytes(short)
    code, _, err = cli(["data", "download", NAME, "--dest", str(tmp_path / "b"), "--url", base + "/short.hdf5"], capsys)
    assert code == 1 and "found 3000 rows" in err and (tmp_path / "b" / FILE).read_bytes() == short


def test_halfcheetah_and_walker2d_are_told_apart_by_the_torso_height(server, tmp_path):
    handler, base = server
    cheetah = file_bytes(tmp_path, d4rl_like("halfcheetah", 1_000_000), "c.hdf5")
    walker = file_bytes(tmp_path, d4rl_like("walker2d", 1_000_000), "w.hdf5")
    handler.files.update({"/c.hdf5": cheetah, "/w.hdf5": walker})
    with pytest.raises(
        DatasetMismatchError,
        match="expected walker2d data: a torso height above 0.6 m.*found a median of -0.1.*data of halfcheetah",
    ):
        download("walker2d-medium-v2", dest=tmp_path / "a", url=base + "/c.hdf5", progress=False)
    with pytest.raises(
        DatasetMismatchError,
        match="expected halfcheetah data.*found a median of 1.25, a torso height: data of hopper or walker2d",
    ):
        download("halfcheetah-medium-v2", dest=tmp_path / "b", url=base + "/w.hdf5", progress=False)
    # the right pairs pass: the test tells the two apart, it does not refuse 17-D data
    assert download("walker2d-medium-v2", dest=tmp_path / "c", url=base + "/w.hdf5", progress=False)
    assert download("halfcheetah-medium-v2", dest=tmp_path / "c", url=base + "/c.hdf5", progress=False)


def test_metadata_naming_another_dataset_is_refused(server, tmp_path):
    handler, base = server
    handler.files["/r.hdf5"] = file_bytes(tmp_path, d4rl_like("hopper", 1_000_000, d4rl_env="hopper-medium-replica"))
    handler.files["/e.hdf5"] = file_bytes(tmp_path, d4rl_like("hopper", 1_000_000, env_id="Walker2d-v4"), "e.hdf5")
    with pytest.raises(
        DatasetMismatchError,
        match="expected a file of hopper-medium-v2, found metadata/d4rl_env = 'hopper-medium-replica'",
    ):
        download(NAME, dest=tmp_path / "a", url=base + "/r.hdf5", progress=False)
    with pytest.raises(
        DatasetMismatchError, match="expected data of hopper, found metadata/env_id = 'Walker2d-v4' \\(walker2d\\)"
    ):
        download(NAME, dest=tmp_path / "a", url=base + "/e.hdf5", progress=False)


def test_a_part_file_longer_than_the_source_is_refused(server, dataset_bytes, tmp_path):
    """A writer that takes no lock (an older kfc-lite, a script) appends to the .part we resume: the file is longer
    than the server announced, and refused, even though its start opens as the right dataset."""
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    handler.mode, handler.cut_after = "hold", 50_000
    part = tmp_path / (FILE + ".part")
    k = len(dataset_bytes) // 3
    part.write_bytes(dataset_bytes[:k])  # we resume: both writers append
    result = {}

    def run():
        try:
            result["path"] = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)
        except Exception as exc:  # handed to the test thread below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while part.stat().st_size != k + 50_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    with open(part, "ab") as intruder:
        intruder.write(dataset_bytes[:1000])
    handler.gate.set()
    thread.join(30)
    assert isinstance(result.get("error"), DatasetError), result
    assert f"has {len(dataset_bytes) + 1000} bytes but the server announced {len(dataset_bytes)}" in str(
        result["error"]
    )
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------------ one download of a name at once
def hold_lock(path: pathlib.Path, pid: int):
    """Take the download lock as another process would: flock the lock file and write a pid in it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{pid}\n".encode())
    return fd


def test_a_held_lock_refuses_with_the_owner_pid(server, dataset_bytes, tmp_path, capsys):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    part = tmp_path / (FILE + ".part")
    part.write_bytes(dataset_bytes[:1000])
    fd = hold_lock(tmp_path / (FILE + ".lock"), 424242)
    try:
        code, _, err = cli(
            ["data", "download", NAME, "--dest", str(tmp_path), "--url", base + "/d.hdf5", "--wait", "0"], capsys
        )
        assert code == 1
        assert f"the download of {NAME} into {tmp_path} is already running in another process (pid 424242" in err
        assert "run the command again" in err and "kill 424242" in err
        t0 = time.monotonic()
        with pytest.raises(DownloadLockedError, match="pid 424242"):
            download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False, wait=0.5)
        assert time.monotonic() - t0 >= 0.5  # it waited as long as it was told before giving up
        assert "waiting for process 424242" in capsys.readouterr().err
    finally:
        os.close(fd)
    assert part.read_bytes() == dataset_bytes[:1000] and handler.requests == []  # the owner's .part untouched
    # once the owner is gone, the same call resumes the .part
    assert (
        pathlib.Path(download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)).read_bytes() == dataset_bytes
    )
    assert handler.requests == [("/d.hdf5", "bytes=1000-")]
    assert sorted(os.listdir(tmp_path)) == [FILE]  # the lock file went with its owner


def test_lock_file_left_by_a_killed_download_does_not_block(server, dataset_bytes, tmp_path):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    (tmp_path / (FILE + ".lock")).write_text("999999\n")  # its process is gone, and the kernel dropped its flock
    path = download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False, wait=0)
    assert pathlib.Path(path).read_bytes() == dataset_bytes and sorted(os.listdir(tmp_path)) == [FILE]


def test_two_processes_resuming_one_part_file(server, dataset_bytes, tmp_path):
    """The second `kfc-lite data download` waits for the first, then takes the finished file from the cache."""
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    handler.mode, handler.cut_after = "hold", 50_000  # the first process's response pauses after 50 kB
    k = len(dataset_bytes) // 3
    (tmp_path / (FILE + ".part")).write_bytes(dataset_bytes[:k])
    argv = [
        sys.executable,
        "-m",
        "kfc_lite",
        "data",
        "download",
        NAME,
        "--dest",
        str(tmp_path),
        "--url",
        base + "/d.hdf5",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    second = None
    try:
        deadline = time.monotonic() + 60
        while not handler.requests and time.monotonic() < deadline:  # the first one holds the lock and is sending
            time.sleep(0.05)
        assert handler.requests == [("/d.hdf5", f"bytes={k}-")]
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        line = second.stderr.readline()  # blocks until the second one says it waits
        assert f"waiting for process {first.pid}, which holds {tmp_path / (FILE + '.lock')}" in line
        handler.gate.set()  # let the first finish
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    finally:
        handler.gate.set()
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert out1.strip() == out2.strip() == str(tmp_path / FILE)
    assert (tmp_path / FILE).read_bytes() == dataset_bytes
    assert len(handler.requests) == 1  # the second process did not download (or append) anything
    assert sorted(os.listdir(tmp_path)) == [FILE]


def test_stall_reports_the_bytes_that_arrived(server, dataset_bytes, tmp_path, capsys):
    handler, base = server
    handler.files["/d.hdf5"] = dataset_bytes
    handler.mode, handler.cut_after = "stall", 43_000
    code, _, err = cli(
        [
            "data",
            "download",
            NAME,
            "--dest",
            str(tmp_path),
            "--url",
            base + "/d.hdf5",
            "--timeout",
            "0.5",
            "--no-progress",
        ],
        capsys,
    )
    assert code == 1
    assert f"stopped after 43000 of {len(dataset_bytes)} bytes (no data for 0.5 s: the server stalled)" in err
    part = tmp_path / (FILE + ".part")
    assert part.read_bytes() == dataset_bytes[:43_000]  # what arrived is kept, to resume from
    handler.gate.set()
    handler.mode = "range"
    assert (
        pathlib.Path(download(NAME, dest=tmp_path, url=base + "/d.hdf5", progress=False)).read_bytes() == dataset_bytes
    )
    assert handler.requests[-1] == ("/d.hdf5", "bytes=43000-")
