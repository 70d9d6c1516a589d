"""download(): against a local HTTP server on 127.0.0.1 that serves files the tests make.

The server can honour Range requests, ignore them, or cut the connection mid-file, so every path of the resumable
download is exercised without the network.
"""
import http.server
import os
import pathlib
import threading

import numpy as np
import pytest

from kfc_lite.data import DatasetError, DownloadError, download, load, write_hdf5
from kfc_lite.data.download import file_digest

NAME = "hopper-medium-v2"
FILE = "hopper_medium-v2.hdf5"  # the registry's (and D4RL's) file name for NAME


class Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}
    mode = "range"  # "range" | "ignore-range" | "cut"
    cut_after = 0
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
        if self.mode == "cut":
            self.wfile.write(chunk[: self.cut_after])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture()
def server():
    Handler.files, Handler.mode, Handler.requests = {}, "range", []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield Handler, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def dataset_bytes(tmp_path_factory):
    """A small but real D4RL-format file, as bytes (uncompressed, so it is large enough to cut in pieces)."""
    rng = np.random.default_rng(0)
    n = 3000
    data = {"observations": rng.normal(size=(n, 11)).astype(np.float32),
            "actions": rng.uniform(-1, 1, size=(n, 3)).astype(np.float32),
            "rewards": rng.normal(size=n).astype(np.float32),
            "terminals": rng.random(n) < 0.01,
            "timeouts": np.zeros(n, bool),
            "metadata/algorithm": "test"}
    path = tmp_path_factory.mktemp("src") / "src.hdf5"
    write_hdf5(data, path, compression=None)
    return path.read_bytes()


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
    assert data["observations"].shape == (3000, 11) and data["metadata/d4rl_env"] == NAME


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
