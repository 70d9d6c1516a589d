"""Sweeps: many ``kfc_lite.train`` runs (datasets x methods x seeds x settings) on Ray, from a laptop to a cluster.

    kfc-lite sweep sweep.yaml                       # an embedded Ray instance on this machine
    kfc-lite sweep sweep.yaml --address HOST:6379   # an existing Ray cluster (or RAY_ADDRESS)
    kfc-lite sweep sweep.yaml --resume              # after the driver stopped: only what is unfinished

One module per idea:

* :mod:`~kfc_lite.sweep.budgets`: named budgets (steps, evaluation, Koopman pre-training);
* :mod:`~kfc_lite.sweep.sweep_file`: the sweep file, read and checked before anything starts;
* :mod:`~kfc_lite.sweep.spec`: the sweep as it will run (:class:`SweepSpec`) and its trials;
* :mod:`~kfc_lite.sweep.prepare`: per dataset, once: the data file, the Koopman model, its symmetry tables;
* :mod:`~kfc_lite.sweep.trial`: one trial = one run folder, resumed from its checkpoint when retried;
* :mod:`~kfc_lite.sweep.live`: the live table of trials;
* :mod:`~kfc_lite.sweep.runner`: Ray and Ray Tune, and what survives which failure;
* :mod:`~kfc_lite.sweep.scores`: a run's score, and the summaries and comparisons across seeds;
* :mod:`~kfc_lite.sweep.report`: the learning benchmark's tables and plot, from the run folders;
* :mod:`~kfc_lite.sweep.cli`: ``kfc-lite sweep``.

docs/sweeps.md explains the sweep file and how to get a cluster.
"""

from kfc_lite.sweep.budgets import BUDGETS, Budget
from kfc_lite.sweep.spec import SweepSpec, SweepSpecError
from kfc_lite.sweep.sweep_file import load_spec, spec_from_dict

__all__ = ["BUDGETS", "Budget", "SweepSpec", "SweepSpecError", "load_spec", "spec_from_dict", "run_sweep"]


def run_sweep(spec, **kwargs):
    """:func:`kfc_lite.sweep.runner.run_sweep` (imported on use: Ray is an optional dependency)."""
    from kfc_lite.sweep.runner import run_sweep as run

    return run(spec, **kwargs)
