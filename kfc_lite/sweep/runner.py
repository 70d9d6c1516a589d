"""Run a sweep on Ray: the per-dataset preparation as Ray tasks, the trials as a Ray Tune experiment.

Where it runs: with no address (and no ``RAY_ADDRESS``), an embedded Ray instance on this machine, started here
and stopped at the end; with an address, the existing cluster at it (``ray start`` on a SLURM allocation, KubeRay,
``ray up``). The code is the same; only the resources differ. Every node must see ``out`` (and ``data``) at the same
path, because a trial writes its run folder from whichever node Ray places it on and may be resumed on another.

What survives what:

* a trial's process or node dies: Tune starts the trial again (``FailureConfig(max_failures)``), anywhere, and the
  trial resumes its run folder from the last checkpoint (:mod:`kfc_lite.sweep.trial`);
* a preparation task's node dies: Ray runs the task again (``max_retries``); what it finished is kept;
* the driver (this process) dies: ``--resume`` runs the trials that have not finished (no ``result.json`` at the
  budget's last step in their run folder), each from its last checkpoint, as a new Tune experiment beside the first
  (``<out>/tune/<name>-resume-<k>``). Finished trials are not started again.

Why not ``Tuner.restore``: the run folders, not Tune's state, hold what a trial has done, and a restored Tune
experiment schedules its pending trials in the order its saved state happens to list them. A fresh experiment of
the unfinished trials keeps the sweep's order (:meth:`SweepSpec.trials`: seeds outermost), so an interrupted
sweep still finishes every method's first seeds before any method's later ones, and paired comparisons grow seed
by seed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time

from kfc_lite.settings import environ
from kfc_lite.sweep.spec import SweepSpec
from kfc_lite.sweep.trial import finished_step, is_finished, read_attempts

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "sweep-results.json"


@dataclasses.dataclass
class SweepOutcome:
    """What a call of :func:`run_sweep` leaves: per-trial results, the report, and the trials that did not finish."""

    trials: list  #: one dict per trial: name, status, step, score, nodes, attempts, error
    report: pathlib.Path | None
    wall_s: float
    ray_start_s: float

    @property
    def unfinished(self) -> list[str]:
        return [t["trial"] for t in self.trials if t["status"] != "finished"]

    @property
    def nodes(self) -> set:
        return {n for t in self.trials for n in t["nodes"]}


def _import_ray():
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "kfc-lite sweep runs on Ray Tune, which is not installed: pip install 'kfc-lite[sweep]' "
            "(or pip install 'ray[tune]')"
        ) from None
    return ray


def start_embedded_ray(cpus: int | None = None) -> None:
    """Start an embedded Ray instance for this process, listening on 127.0.0.1 only.

    Ray gives a node the machine's outward address, and then its servers (the GCS, the raylet, the workers, the
    agents) listen on every interface: what a cluster needs, and needless exposure for an instance that serves
    this process alone. Ray has a switch for machines that are no cluster host (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER
    =0``, the default on Windows and macOS): with it, a node takes 127.0.0.1 and every server listens there. Ray's
    processes started here read it from the environment; this process read it when it imported Ray, so the switch
    is also set on the imported module (``ray._private.ray_constants``) while the instance starts. Both are put back
    afterwards: a later ``ray.init(address=...)`` in this process joins a cluster as usual.
    """
    import ray
    from ray._private import ray_constants

    # a Ray without the switch (a later version) starts the instance as it would anyway
    had = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    was = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    with environ(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"):
        if had:
            ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            # "local" and not None: None would join any cluster `ray start` left running on this machine
            ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        finally:
            if had:
                ray_constants.ENABLE_RAY_CLUSTER = was


def check_out_folder(spec: SweepSpec, resume: bool) -> None:
    """A sweep's output root holds one sweep: starting again needs --resume, and resuming needs the same sweep."""
    saved_path = spec.out / SWEEP_FILE
    mine = json.loads(json.dumps(spec.to_json()))  # as sweep.json holds it: lists, not tuples
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        if not resume:
            raise ValueError(
                f"{spec.out} already holds the sweep {saved.get('name')!r}: pass --resume to continue it "
                "(finished trials are kept), or choose another out"
            )
        # where it runs may change (another cluster, more CPUs): what each trial computes may not
        changed = sorted(k for k in mine if saved.get(k) != mine[k] and k not in ("out", "resources"))
        if changed:
            raise ValueError(
                f"the sweep in {spec.out} was started with different {', '.join(changed)}: resume it with "
                f"the sweep file it was started with (its settings are in {saved_path}), or choose "
                "another out for the new sweep"
            )
    elif not resume and any((spec.run_dir(t) / "config.json").is_file() for t in spec.trials()):
        raise ValueError(
            f"{spec.out} already holds run folders of these trials: pass --resume to continue them, or "
            "choose another out"
        )


def unfinished_trials(spec: SweepSpec) -> list:
    """The trials whose run folder holds no finished run, in the sweep's order (seeds outermost)."""
    return [t for t in spec.trials() if not is_finished(spec.run_dir(t), spec.budget.steps)]


def experiment_name(storage: pathlib.Path, name: str) -> str:
    """A Tune experiment of its own for each start of the sweep: ``name``, then ``name-resume-2``, ``-3``, ..."""
    if not (storage / name).exists():
        return name
    k = 2
    while (storage / f"{name}-resume-{k}").exists():
        k += 1
    return f"{name}-resume-{k}"


def _trial_dirname(trial) -> str:
    """Tune's own folder of a trial (its logs and error file); the run folder is elsewhere, under ``out``."""
    return f"trial_{trial.trial_id}"


def _prepare(ray, spec: SweepSpec, stream) -> dict:
    """One preparation task per dataset, in parallel across the cluster; returns what each made."""
    from kfc_lite.sweep.prepare import prepare_dataset

    task = ray.remote(prepare_dataset).options(
        num_cpus=spec.resources.preparation_cpus, num_gpus=spec.resources.gpus, max_retries=spec.max_failures
    )
    pending = {task.remote(spec, ds): ds for ds in spec.datasets}
    made = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ds = pending.pop(ready[0])
        made[ds.label] = info = ray.get(ready[0])
        k = info["koopman"]
        model = f"; Koopman model relative one-step error {k['relative_one_step_error']:.3f}" if k else ""
        print(f"prepared {ds.label} in {info['seconds']:.1f} s{model}", file=stream, flush=True)
    return made


def _outcome(spec: SweepSpec, errors: dict) -> list[dict]:
    rows = []
    for trial in spec.trials():
        run = spec.run_dir(trial)
        attempts = read_attempts(run)
        step, done = finished_step(run), is_finished(run, spec.budget.steps)
        result = json.loads((run / "result.json").read_text()) if done else {}
        rows.append(
            {
                "trial": trial.name,
                "dataset": trial.dataset.label,
                "method": trial.label,
                "seed": trial.seed,
                "status": "finished" if done else ("error" if trial.name in errors else "unfinished"),
                "step": step,
                "score": result.get("final_normalized"),
                "nodes": sorted({a["node"] for a in attempts}),
                "attempts": attempts,
                "error": errors.get(trial.name),
            }
        )
    return rows


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    resume: bool = False,
    local_cpus: int | None = None,
    results: pathlib.Path | None = None,
    command: str = "kfc-lite sweep",
    note: str = "",
    table_every_s: float = 10.0,
    stream=None,
) -> SweepOutcome:
    """Run every unfinished trial of ``spec`` and write the results; see the module docstring.

    ``address``: a Ray cluster (``host:port``); None: ``RAY_ADDRESS``, else an embedded instance with
    ``local_cpus`` CPUs (default: all). ``results``: where learning.json, learning.md and learning.png go
    (default ``<out>/results``).
    """
    from kfc_lite.sweep.live import LiveTable
    from kfc_lite.sweep.trial import run_trial

    stream = stream or sys.stdout
    check_out_folder(spec, resume)
    t0 = time.perf_counter()
    spec.out.mkdir(parents=True, exist_ok=True)
    (spec.out / SWEEP_FILE).write_text(json.dumps(spec.to_json(), indent=1))
    todo = unfinished_trials(spec)
    if resume and not todo:
        # nothing left to run: no need to start Ray (seconds to half a minute) to find that out
        print(f"sweep {spec.name}: every trial has finished; writing the results", file=stream, flush=True)
        return _finish(spec, {}, results, command, note, t0, 0.0, stream)
    ray = _import_ray()
    from ray import tune

    address = address or os.environ.get("RAY_ADDRESS") or None
    owned = not ray.is_initialized()
    if owned and address:
        ray.init(address=address, log_to_driver=False)
    elif owned:
        start_embedded_ray(local_cpus)
    ray_start_s = time.perf_counter() - t0
    where = f"the Ray cluster at {address}" if address else "an embedded Ray instance"
    cpus = ray.cluster_resources().get("CPU", 0)
    print(
        f"sweep {spec.name}: {len(spec.trials())} trials on {where} ({len(ray.nodes())} node(s), {cpus:g} CPUs; "
        f"started in {ray_start_s:.1f} s); run folders under {spec.out}",
        file=stream,
        flush=True,
    )
    try:
        _prepare(ray, spec, stream)
        trials = {t.name: spec.train_config(t).to_dict() for t in todo}
        resources = {"cpu": spec.resources.cpus, "gpu": spec.resources.gpus}
        trainable = tune.with_resources(tune.with_parameters(run_trial, trials=trials), resources)
        storage = spec.out / "tune"
        name = experiment_name(storage, spec.name)
        if resume:
            print(
                f"resuming: {len(spec.trials()) - len(todo)} of {len(spec.trials())} trials finished before; the "
                f"other {len(todo)} run in the sweep's order, each from its last checkpoint (Tune experiment {name})",
                file=stream,
                flush=True,
            )
        run_config = tune.RunConfig(
            name=name,
            storage_path=str(storage),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[LiveTable(steps=spec.budget.steps, every_s=table_every_s)],
        )
        tuner = tune.Tuner(
            trainable,
            # a grid over a list runs in the list's order: the sweep's, seeds outermost
            param_space={"run": tune.grid_search(list(trials))},
            # one process runs trial after trial: torch is imported once per process, not per trial
            tune_config=tune.TuneConfig(trial_dirname_creator=_trial_dirname, reuse_actors=True),
            run_config=run_config,
        )
        grid = tuner.fit()
        errors = {}
        for r in grid:
            if r.error is not None and r.config:
                errors[r.config["run"]] = f"{type(r.error).__name__}: {r.error}".splitlines()[0]
    finally:
        if owned:
            ray.shutdown()
    return _finish(spec, errors, results, command, note, t0, ray_start_s, stream)


def _finish(spec, errors, results, command, note, t0, ray_start_s, stream) -> SweepOutcome:
    """sweep-results.json (every trial: status, nodes, attempts), the learning report, and a summary."""
    from kfc_lite.sweep.report import write_sweep_report

    rows = _outcome(spec, errors)
    (spec.out / RESULTS_FILE).write_text(json.dumps(rows, indent=1))
    wall = time.perf_counter() - t0
    report = write_sweep_report(spec, results or spec.out / "results", command, wall, note)
    outcome = SweepOutcome(rows, report, wall, ray_start_s)
    done = len(rows) - len(outcome.unfinished)
    print(
        f"sweep {spec.name}: {done} of {len(rows)} trials finished in {wall:.1f} s on {len(outcome.nodes)} node(s); "
        f"results in {report.parent}",
        file=stream,
        flush=True,
    )
    for t in rows:
        if t["status"] != "finished":
            print(
                f"  {t['trial']}: {t['status']}{' (' + t['error'] + ')' if t['error'] else ''}; its log is "
                f"{spec.out / t['trial'] / 'train.log'}; rerun with --resume",
                file=stream,
                flush=True,
            )
    return outcome
