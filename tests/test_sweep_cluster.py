"""`kfc-lite sweep` on a real two-node Ray cluster on 127.0.0.1: trials placed on both nodes, a node lost mid-sweep,
a driver killed and resumed, and every server of the cluster listening on loopback only.

The test starts the head and a second node itself (`ray start --block`, one CPU each, their own ports and temp
folders, each in its own process session) and stops them by killing those sessions' processes by id: no
`ray stop`, which would also stop any other Ray on the machine. The sweeps are tiny (small networks, a few hundred
steps) so that the module takes a few minutes, most of it Ray and Python starting processes.

When something fails, the cluster's folder (its nodes' logs under ``<node>/session_latest/logs``) is kept and its
path is printed; on success it is deleted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray")
pytest.importorskip("ray.tune")

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
pytestmark = pytest.mark.slow

# `ray start --node-ip-address=127.0.0.1` replaces a loopback address with this machine's outward one, so that other
# machines could reach the node (ray._private.services.resolve_ip_for_localhost), and its servers then listen on
# every interface. A test cluster serves this machine alone, so its nodes are started with that replacement skipped:
# they keep the address they are given, and listen there.
NODE_LAUNCHER = """
import sys
import ray._private.services as services
assert hasattr(services, "resolve_ip_for_localhost"), "Ray no longer has resolve_ip_for_localhost: update the test"
services.resolve_ip_for_localhost = lambda host: host
from ray.scripts.scripts import main
sys.argv[0] = "ray"
sys.exit(main())
"""

STEPS, EVAL_EVERY, LOG_EVERY = 600, 100, 50
_picked: set = set()  # the ports handed out so far, never twice


def _free_port() -> int:
    """A port free now, for a server the test tells Ray to start. Not one the system hands out by itself (its
    ephemeral range, where Ray's own servers on port 0 and every outgoing connection get theirs: one of those could
    take it before Ray binds it), and not one of Ray's worker ports (10002-19999 by default)."""
    try:
        first_ephemeral = int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768
    for _ in range(1000):
        port = random.randrange(20000, max(first_ephemeral, 20001))
        if port in _picked:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    raise RuntimeError("no free port between 20000 and the system's ephemeral range")


def _session_pids(sid: int) -> list[int]:
    """Every live process of the session ``sid`` (the session a node or driver was started in)."""
    pids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # fields[3]: the session id; Z: a zombie, already dead
            pids.append(int(stat.parent.name))
    return pids


def _kill_session(proc: subprocess.Popen) -> None:
    """Kill the node (or driver) started as ``proc`` and everything it started, by their process ids."""
    for pid in _session_pids(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _session_pids(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session_pids(proc.pid), "a process of the stopped node survived"


def _address(hex_addr: str) -> str:
    """An address of /proc/net/tcp[6] (hex, in the kernel's byte order: 32-bit words little-endian) as text."""
    ip_hex, port_hex = hex_addr.split(":")
    ip = ipaddress.ip_address(b"".join(bytes.fromhex(ip_hex[i : i + 8])[::-1] for i in range(0, len(ip_hex), 8)))
    ip = getattr(ip, "ipv4_mapped", None) or ip  # an IPv6 socket bound to an IPv4 address: that address
    return f"{ip}:{int(port_hex, 16)}"


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback


def listening(pids) -> list[tuple[int, str]]:
    """The TCP sockets the processes ``pids`` listen on, as (pid, "address:port"), read from /proc: which process
    holds which socket (its fd links name the socket's inode) and where each socket listens (state 0A)."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[int(target[8:-1])] = pid
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[9]) in owner:
                    found.append((owner[int(fields[9])], _address(fields[1])))
    return found


class Cluster:
    def __init__(self, root: pathlib.Path):
        self.root, self.nodes = root, {}
        # Ray's checks of its nodes every second (a killed node is declared dead after 10 missed ones), and patience
        # with processes that start slowly on a loaded 2-core machine (agents registering with their raylet, the
        # default 15 s; workers registering with it, the default 10 s); no token authentication: the test cluster
        # is for this machine alone
        self.env = {
            **os.environ,
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "10",
            "RAY_agent_register_timeout_ms": "120000",
            "RAY_raylet_start_wait_time_s": "120",
            "OMP_NUM_THREADS": "1",
            "RAY_ADDRESS": "",
            "RAY_AUTH_MODE": "disabled",
        }
        # A driver given 127.0.0.1:PORT also swaps in the outward address, unless Ray is told that this machine is no
        # cluster host (Ray's switch for Windows and macOS, where multi-node clusters are off by default): then its
        # own address is 127.0.0.1 and it connects where it is told. Nodes must not see it: `ray start` refuses to
        # join a second node with it set.
        self.driver_env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self, name: str, head: bool) -> str:
        """Start a node; returns how the sweep's results name it (address:port of its raylet)."""
        nm_port = _free_port()
        ports = [
            f"--node-manager-port={nm_port}",
            f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}",
        ]
        role = ["--head", f"--port={self.port}", "--include-dashboard=false"] if head else [f"--address={self.address}"]
        temp = self.root / name
        temp.mkdir(exist_ok=True)
        log = open(self.root / f"{name}.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                NODE_LAUNCHER,
                "start",
                "--block",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                "--num-gpus=0",
                "--disable-usage-stats",
                f"--temp-dir={temp}",
                *role,
                *ports,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )
        label = f"127.0.0.1:{nm_port}"
        self.nodes[name] = (proc, label)
        return label

    def wait_for(self, alive: int, timeout: float = 120) -> None:
        """Until the cluster has ``alive`` nodes (asked of the cluster itself, from a short-lived driver)."""
        code = (
            "import ray, time, sys\nray.init(address=sys.argv[1], log_to_driver=False)\n"
            f"end = time.monotonic() + {timeout}\n"
            f"while sum(n['Alive'] for n in ray.nodes()) != {alive} and time.monotonic() < end: time.sleep(0.5)\n"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.monotonic() + timeout
        while True:  # the head's port opens a moment after `ray start` is called
            for name, (proc, _) in self.nodes.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"`ray start` of the {name} node exited with {proc.returncode}:\n{self.logs()}"
                    )
            out = subprocess.run(
                [sys.executable, "-c", code, self.address],
                capture_output=True,
                text=True,
                env=self.driver_env,
                timeout=timeout + 60,
            )
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(alive)]:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not reach {alive} nodes:\n{out.stderr[-3000:]}\n{self.logs()}")
            time.sleep(1)

    def start_and_wait(self, name: str, head: bool, alive: int) -> str:
        """Start a node and wait until the cluster counts ``alive`` nodes; start it once more if its raylet gave up
        on its dashboard agent.

        Ray's raylet waits a fixed 15 s for the node's dashboard agent to write its port file and exits when the
        agent is slower (Ray issue 65983, "Raylet crashes on slow dashboard agent startup"), which a 2-core machine
        busy with other work can make it. That is Ray starting slowly, not what these tests test, so it gets a
        second start; any other failure, or the same one twice, fails the fixture with the nodes' logs."""
        for attempt in (1, 2):
            label = self.start(name, head)
            try:
                self.wait_for(alive)
                return label
            except AssertionError:
                if attempt == 2 or not self.raylet_gave_up_on_its_agent(name):
                    raise
                print(f"the {name} node's raylet gave up waiting for its dashboard agent: starting it again")
                self.kill(name)
        raise AssertionError("unreachable")

    def raylet_gave_up_on_its_agent(self, name: str) -> bool:
        return any(
            "Timed out waiting for file" in line and "agent" in line
            for path in (self.root / name).glob("session_*/logs/raylet.out")
            for line in path.read_text(errors="replace").splitlines()
        )

    def logs(self) -> str:
        """What the nodes said: the end of each `ray start` output, and the errors in each node's own logs."""
        parts = []
        for name in self.nodes:
            parts.append(f"--- {name}: ray start\n" + (self.root / f"{name}.log").read_text()[-2000:])
            for path in sorted((self.root / name).glob("session_*/logs/*")):
                if path.is_file() and not path.parent.parent.is_symlink():
                    bad = [
                        line
                        for line in path.read_text(errors="replace").splitlines()
                        if " E " in line or "ERROR" in line or "Error" in line or "timed out" in line
                    ]
                    if bad:
                        parts.append(f"--- {path.relative_to(self.root)}\n" + "\n".join(bad[-5:]))
        return "\n".join(parts)[-12000:]

    def pids(self) -> list[int]:
        return [pid for proc, _ in self.nodes.values() for pid in _session_pids(proc.pid)]

    def kill(self, name: str) -> None:
        proc, _ = self.nodes.pop(name)
        _kill_session(proc)


@pytest.fixture(scope="module")
def cluster(request):
    # a short folder: Ray's socket paths must fit in 107 bytes, which pytest's tmp_path can exceed
    root = pathlib.Path(tempfile.mkdtemp(prefix="kfcray-", dir="/tmp"))
    c = Cluster(root)
    failed_before, t0, ok = request.session.testsfailed, time.monotonic(), False
    try:
        c.head = c.start_and_wait("head", head=True, alive=1)
        c.worker = c.start_and_wait("worker", head=False, alive=2)
        c.start_s = time.monotonic() - t0
        print(f"two-node cluster up in {c.start_s:.1f} s")
        yield c
        ok = request.session.testsfailed == failed_before
    finally:
        for name in list(c.nodes)[::-1]:
            c.kill(name)
        if ok:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"the cluster's folder, with its nodes' logs, is kept for inspection: {root}")


def _spec(path: pathlib.Path, out: pathlib.Path, data: pathlib.Path, **extra) -> pathlib.Path:
    spec = {
        "out": str(out),
        "data": str(data),
        "datasets": ["hopper-random-replica:2000"],
        "methods": ["cql", "s4rl"],
        "seeds": [0, 1],
        # small networks and batches: a step in milliseconds; a checkpoint at every evaluation
        "budget": {"base": "tiny", "steps": STEPS, "eval_every": EVAL_EVERY, "log_every": LOG_EVERY, "last_k": 2},
        "set": {"hidden": [[32, 32]], "batch_size": 32, "cql_n_actions": 2},
        "resources": {"cpus": 1},
        "max_failures": 3,
        **extra,
    }
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def _driver(cluster, spec: pathlib.Path, *args) -> subprocess.Popen:
    log = open(spec.with_suffix(f".{len(list(spec.parent.glob(spec.stem + '.*.log')))}.log"), "w")
    return subprocess.Popen(
        [str(BIN / "kfc-lite"), "sweep", str(spec), "--address", cluster.address, "--table-every", "5", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**cluster.driver_env, "MPLBACKEND": "Agg"},
        start_new_session=True,
        cwd=ROOT,
    )


def _wait(proc: subprocess.Popen, spec: pathlib.Path, timeout: float = 400) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
    logs = "\n".join(p.read_text() for p in sorted(spec.parent.glob(spec.stem + ".*.log")))
    assert proc.returncode == 0, logs[-6000:]
    return logs


def _check_runs(out: pathlib.Path) -> list[dict]:
    """Every trial finished, with each logged step exactly once in metrics.jsonl; returns sweep-results.json."""
    results = json.loads((out / "sweep-results.json").read_text())
    assert [t["status"] for t in results] == ["finished"] * len(results)
    for t in results:
        rows = [json.loads(line) for line in (out / t["trial"] / "metrics.jsonl").read_text().splitlines()]
        train = [r["step"] for r in rows if r["kind"] == "train"]
        evals = [r["step"] for r in rows if r["kind"] == "eval"]
        assert train == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY)), (t["trial"], train)
        assert evals == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)), (t["trial"], evals)
    return results


def _wait_until(predicate, proc, timeout=300, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _attempts(run: pathlib.Path) -> list[dict]:
    path = run / "sweep-attempts.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _evals(run: pathlib.Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line still being written
            continue
        if row.get("kind") == "eval":
            steps.append(row["step"])
    return steps


# An embedded instance as `kfc-lite sweep` starts one without --address; says where it is, and stays up until its
# input is closed
EMBEDDED = """
import sys
import ray
from kfc_lite.sweep.runner import start_embedded_ray
start_embedded_ray(1)
where = ray.remote(lambda: ray.util.get_node_ip_address())
print(ray.get(where.remote()), ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


def test_an_embedded_instance_listens_on_loopback_only():
    proc = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    try:
        said = proc.stdout.readline().split()
        sockets = listening(_session_pids(proc.pid))
        proc.stdin.close()
        proc.wait(timeout=60)
    finally:
        _kill_session(proc)
    assert len(said) == 2, f"the embedded instance did not start (exit {proc.returncode})"
    node_ip, gcs = said
    assert node_ip == "127.0.0.1"  # where its tasks run: the node took the loopback address
    assert gcs in {a for _, a in sockets}, (gcs, sockets)  # the GCS's port among those seen: the check saw Ray
    assert [(pid, a) for pid, a in sockets if not _is_loopback(a)] == [], sockets


def test_driver_killed_then_resumed_reruns_only_unfinished_trials(cluster, tmp_path):
    spec = _spec(tmp_path / "resume.yaml", tmp_path / "out", cluster.root / "data")
    out = tmp_path / "out" / "hopper-random-replica-2000"
    driver = _driver(cluster, spec)
    t0 = time.monotonic()

    def some_finished():
        runs = [p for p in out.glob("*-seed*") if p.is_dir()]
        done = [p for p in runs if (p / "result.json").is_file()]
        return done if done and len(done) < 4 else None

    finished = _wait_until(some_finished, driver, what="a first finished trial")
    _kill_session(driver)  # the driver dies; the cluster stays
    before = {p.name: ((p / "result.json").stat().st_mtime_ns, len(_attempts(p))) for p in finished}
    assert all(n == 1 for _, n in before.values())

    # the finished runs' results, read off the run folders while the sweep is stopped: each scored, with the note
    partial = tmp_path / "partial"
    report = [str(BIN / "kfc-lite"), "sweep", str(spec), "--report-only", "--results", str(partial)]
    done = subprocess.run(report + ["--note", "the finished runs only"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = {
        f"{r['method']}-seed{r['seed']}"
        for r in json.loads((partial / "learning.json").read_text())
        if r["kind"] == "score"
    }
    assert set(before) <= scored and "* note: the finished runs only" in (partial / "learning.md").read_text()

    # the same out without --resume is refused before Ray is touched
    again = subprocess.run(
        [str(BIN / "kfc-lite"), "sweep", str(spec)], capture_output=True, text=True, cwd=ROOT, env=cluster.driver_env
    )
    assert again.returncode == 1 and "pass --resume" in again.stderr

    logs = _wait(_driver(cluster, spec, "--resume"), spec)
    print(f"driver killed and resumed: {time.monotonic() - t0:.1f} s")
    results = _check_runs(tmp_path / "out")
    for name, (mtime, n) in before.items():  # finished trials were not run again
        assert (out / name / "result.json").stat().st_mtime_ns == mtime
        assert len(_attempts(out / name)) == n == 1
    # (a trial may have finished between the check above and the kill)
    assert re.search(r"resuming: [1-3] of 4 trials finished before; the other [1-3] run in the sweep's order", logs)
    assert len(results) == 4 and (tmp_path / "out" / "results" / "learning.md").is_file()


def test_two_nodes_share_the_sweep_and_a_lost_node_costs_no_step(cluster, tmp_path):
    """2 datasets x 2 methods x 2 seeds on the head and the worker; the worker is killed while one of its trials
    is between checkpoints; the trial is retried on the head from its checkpoint and every trial finishes. While
    trials run on both nodes, every process of the cluster and of the driver listens on loopback only."""
    spec = _spec(
        tmp_path / "nodes.yaml",
        tmp_path / "out",
        cluster.root / "data",
        datasets=["hopper-random-replica:2000", "walker2d-random-replica:2000"],
        methods=["cql", "kfc++"],
    )
    out = tmp_path / "out"
    t0 = time.monotonic()
    driver = _driver(cluster, spec)

    def on_worker_between_checkpoints():
        """A trial of the worker node with a checkpoint and at least two evaluation intervals still to go: killing
        the node now loses work, and the trial cannot finish in the moment it takes to kill the node."""
        for run in out.glob("*/*-seed*"):
            tried, evals = _attempts(run), _evals(run)
            if (
                tried
                and tried[-1]["node"] == cluster.worker
                and (run / "checkpoint.pt").is_file()
                and evals
                and evals[-1] <= STEPS - 2 * EVAL_EVERY
            ):
                return run
        return None

    victim = _wait_until(on_worker_between_checkpoints, driver, what="a trial on the worker node with a checkpoint")
    sockets = listening(cluster.pids() + _session_pids(driver.pid))
    cluster.kill("worker")
    logs = _wait(driver, spec)
    print(f"two-node sweep with the worker killed: {time.monotonic() - t0:.1f} s")

    # Ray's servers (the GCS, both raylets and object managers, the agents, the workers and the driver) listen on
    # 127.0.0.1 and nowhere else; the head's GCS port is among them, so the check saw the cluster
    assert cluster.address in {a for _, a in sockets}, sockets
    assert [(pid, a) for pid, a in sockets if not _is_loopback(a)] == [], sockets

    results = _check_runs(out)
    assert len(results) == 8
    nodes = {n for t in results for n in t["nodes"]}
    assert nodes == {cluster.head, cluster.worker}, nodes
    tried = _attempts(victim)
    assert len(tried) >= 2 and tried[0]["node"] == cluster.worker and tried[-1]["node"] == cluster.head, tried
    # the retry started from its last checkpoint, not from 0
    assert tried[-1]["start_step"] > 0 and tried[-1]["start_step"] % EVAL_EVERY == 0, tried
    by_name = {t["trial"]: t for t in results}
    assert by_name[str(victim.relative_to(out))]["nodes"] == sorted({cluster.head, cluster.worker})
    md = (out / "results" / "learning.md").read_text()
    assert "| hopper-random-replica | kfc++ | 2 |" in md and "| walker2d-random-replica | cql | 2 |" in md
    assert (out / "results" / "learning.png").stat().st_size > 1000
    assert "(2 node(s), 2 CPUs" in logs
