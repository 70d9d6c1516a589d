"""Figures for notebooks 04 and 05: learning curves from run folders, training diagnostics, Q on data vs OOD actions.

Every function returns a Matplotlib figure (tests call them with the Agg backend). The explorer is
:func:`curves_explorer_update` (plain, testable) plus :func:`curves_explorer` (a thin ipywidgets layer).
"""

from __future__ import annotations

import json
import pathlib

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "load_runs",
    "learning_curves",
    "plot_training_metrics",
    "q_on_actions",
    "plot_q_ood",
    "curves_explorer_update",
    "curves_explorer",
    "evidence_figure",
    "METRIC_LABELS",
]

#: metrics.jsonl keys -> axis labels with units
METRIC_LABELS = {
    "normalized": "D4RL normalized score (%)",
    "return": "episode return (raw)",
    "critic_loss": "critic loss (TD + CQL)",
    "td_loss": "TD loss (squared return units)",
    "cql_gap": "CQL gap: logsumexp Q(s,·) − Q(s,a_data)",
    "cql_weight": "CQL weight α′·min_q_weight",
    "q_data": "Q on dataset actions (return units)",
    "q_random": "Q on random actions (return units)",
    "q_policy": "Q on policy actions (return units)",
    "actor_loss": "actor loss",
    "alpha": "entropy temperature α",
    "steps_per_second": "gradient steps per second",
    "aug_state_shift": "mean |s̃ − s| (state units)",
}


def load_runs(run_dirs) -> list[dict]:
    """Read run folders: ``[{"dir", "method", "dataset", "seed", "train": [...], "eval": [...]}, ...]``."""
    from kfc_lite.train import read_metrics

    if isinstance(run_dirs, (str, pathlib.Path)):
        run_dirs = [run_dirs]
    runs = []
    for d in run_dirs:
        d = pathlib.Path(d)
        cfg_path = d / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{d} has no config.json: is it a run folder written by kfc_lite.train?")
        cfg = json.loads(cfg_path.read_text())
        train_cfg = cfg.get("train", {})
        rows = read_metrics(d)
        runs.append(
            {
                "dir": d,
                "method": train_cfg.get("method", "online-sac" if cfg.get("online") else "?"),
                "dataset": train_cfg.get("dataset", cfg.get("env")),
                "seed": train_cfg.get("seed", cfg.get("seed")),
                "train": [r for r in rows if r.get("kind") == "train"],
                "eval": [r for r in rows if r.get("kind") == "eval"],
            }
        )
    return runs


def _series(rows: list[dict], key: str):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    if not pts:
        return np.zeros(0), np.zeros(0)
    s, v = zip(*pts)
    return np.asarray(s, dtype=float), np.asarray(v, dtype=float)


def _smooth(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(v) < 2:
        return v
    out = np.empty_like(v)
    for i in range(len(v)):
        out[i] = v[max(0, i - window + 1) : i + 1].mean()
    return out


def learning_curves(run_dirs, metric: str = "normalized", smooth: int = 1, ax=None, title: str | None = None):
    """Evaluation curves of several runs, one line per method: the mean over seeds, a band from min to max.

    ``metric`` is ``"normalized"`` (D4RL score, %) or ``"return"`` (raw). Runs of one method are aligned on the
    steps they share. ``smooth`` averages each seed's curve over that many evaluations first.
    """
    runs = load_runs(run_dirs)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6.5, 4))
    fig = ax.figure
    by_method: dict[str, list] = {}
    several = len({str(r["dataset"]) for r in runs}) > 1
    for run in runs:  # one line per method (per method and dataset when the runs cover several datasets)
        label = f"{run['method']} · {pathlib.Path(str(run['dataset'])).name}" if several else run["method"]
        by_method.setdefault(label, []).append(run)
    for i, (method, group) in enumerate(sorted(by_method.items())):
        curves = [_series(r["eval"], metric) for r in group]
        curves = [(s, _smooth(v, smooth)) for s, v in curves if len(s)]
        if not curves:
            continue
        common = sorted(set.intersection(*[set(s.tolist()) for s, _ in curves]))
        if not common:
            continue
        stack = np.stack([[v[list(s).index(c)] for c in common] for s, v in curves])
        steps = np.asarray(common)
        ax.plot(
            steps,
            stack.mean(0),
            color=f"C{i}",
            lw=2,
            marker="o" if len(steps) < 20 else None,
            ms=3,
            label=f"{method} ({len(curves)} seed{'s' if len(curves) > 1 else ''})",
        )
        if len(curves) > 1:
            ax.fill_between(steps, stack.min(0), stack.max(0), color=f"C{i}", alpha=0.2)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    datasets = sorted({str(r["dataset"]) for r in runs})
    ax.set_title(title or f"Evaluation during training on {', '.join(pathlib.Path(d).name for d in datasets)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_training_metrics(run_dir, keys=("critic_loss", "cql_gap", "cql_weight", "q_data"), smooth: int = 1):
    """One panel per training metric of one run (``metrics.jsonl`` train rows) against gradient steps."""
    (run,) = load_runs([run_dir])
    keys = list(keys)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        s, v = _series(run["train"], key)
        if key == "q_data":  # Q on data next to Q on random and policy actions: the conservative gap
            for other, color in (("q_random", "C3"), ("q_policy", "C2")):
                so, vo = _series(run["train"], other)
                if len(so):
                    ax.plot(so, _smooth(vo, smooth), color=color, lw=1, label=other.replace("q_", "Q on ") + " actions")
            ax.set_ylabel("Q (return units)")
        else:
            ax.set_ylabel(METRIC_LABELS.get(key, key), fontsize=8)
        ax.plot(s, _smooth(v, smooth), color="C0", lw=1.5, label=key.replace("q_data", "Q on dataset actions"))
        ax.set_xlabel("gradient steps")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if key == "q_data":
            ax.legend(fontsize=7)
    fig.suptitle(f"{run['method']} on {pathlib.Path(str(run['dataset'])).name}: training diagnostics")
    fig.tight_layout()
    return fig


def q_on_actions(agent, observations, actions, n_random: int = 10, seed: int = 0) -> dict:
    """Q (min over critics) at dataset actions, uniform random actions and the policy's mean action, per state.

    ``agent`` is a :class:`~kfc_lite.rl.sac.SACCQL`. Returns NumPy arrays: ``data`` (N,), ``random`` (N, n_random),
    ``policy`` (N,). A conservative critic puts ``data`` above ``random``.
    """
    import torch

    dev = agent.device
    s = torch.as_tensor(np.asarray(observations, dtype=np.float32), device=dev)
    a = torch.as_tensor(np.asarray(actions, dtype=np.float32), device=dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        rand = torch.rand(s.shape[0], n_random, a.shape[1], generator=g, device=dev) * 2 - 1
        q_data = agent.critic(s, a).min(0).values
        q_rand = agent.critic(s, rand).min(0).values
        q_pi = agent.critic(s, agent.actor.deterministic(s)).min(0).values
    return {"data": q_data.cpu().numpy(), "random": q_rand.cpu().numpy(), "policy": q_pi.cpu().numpy()}


def plot_q_ood(q: dict, title: str = "Q on dataset actions vs out-of-distribution actions", ax=None):
    """Histograms of :func:`q_on_actions`' output: where the critic puts data, random and policy actions."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.5))
    fig = ax.figure
    parts = [
        ("data", "dataset actions", "C0"),
        ("random", "uniform random actions", "C3"),
        ("policy", "policy's mean action", "C2"),
    ]
    allv = np.concatenate([np.ravel(q[k]) for k, _, _ in parts if k in q])
    bins = np.linspace(allv.min(), allv.max(), 40) if allv.size and allv.max() > allv.min() else 20
    for key, label, color in parts:
        if key in q:
            v = np.ravel(q[key])
            ax.hist(v, bins=bins, alpha=0.45, color=color, density=True, label=f"{label} (mean {v.mean():.2f})")
    ax.set_xlabel("Q(s, a), min over critics (return units)")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_explorer_update(run_dirs, metric: str = "normalized", smooth: int = 1):
    """Learning curves for ``metric``: evaluation metrics (``normalized``, ``return``) across runs, else the
    training metric of every run as its own line."""
    if metric in ("normalized", "return"):
        return learning_curves(run_dirs, metric=metric, smooth=smooth)
    runs = load_runs(run_dirs)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, run in enumerate(runs):
        s, v = _series(run["train"], metric)
        ax.plot(s, _smooth(v, smooth), color=f"C{i % 10}", lw=1.5, label=f"{run['method']} seed {run['seed']}")
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.set_title(f"{metric} during training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_explorer(run_dirs, metric: str = "normalized"):
    """A metric drop-down and a smoothing slider around :func:`curves_explorer_update`; returns the widget."""
    import ipywidgets as widgets
    from IPython.display import display

    options = [m for m in METRIC_LABELS if m != "aug_state_shift"] + ["aug_state_shift"]
    metric_w = widgets.Dropdown(options=options, value=metric, description="metric")
    smooth_w = widgets.IntSlider(value=1, min=1, max=20, description="smooth", continuous_update=False)
    out = widgets.Output()

    def redraw(metric, smooth):
        with out:
            out.clear_output(wait=True)
            fig = curves_explorer_update(run_dirs, metric, smooth)
            display(fig)
            plt.close(fig)

    widgets.interactive_output(redraw, {"metric": metric_w, "smooth": smooth_w})
    return widgets.VBox([widgets.HBox([metric_w, smooth_w]), out])


def evidence_figure(evidence, statistic: str = "mean"):
    """A multi-seed benchmark (:class:`kfc_lite.evidence.Evidence`) in two panels: left, every run's score (dots) with
    each arm's mean (or IQM) and its bootstrap 95 % interval; right, each arm minus the baseline seed by seed, with
    the Student-t 95 % interval of the mean difference. An interval that crosses the dashed zero line is "not
    distinguishable". An arm with one finished run, or a comparison with one shared seed, gets its dots only.
    """
    from kfc_lite.evidence import label

    arms = evidence.arms
    others = [a for a in arms if a != evidence.baseline]
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [len(arms), max(len(others), 1)]}
    )
    rng = np.random.default_rng(0)  # the dots' horizontal jitter only
    for i, arm in enumerate(arms):
        x = np.array(list(evidence.scores[arm].values()))
        ax.scatter(i + rng.uniform(-0.15, 0.15, x.size), x, s=14, alpha=0.5, color="C0")
        if x.size < 2:
            continue
        ci = evidence.interval(arm, statistic)
        ax.errorbar(
            i + 0.3, ci.estimate, yerr=[[ci.estimate - ci.low], [ci.high - ci.estimate]], fmt="o", color="k", capsize=4
        )
    ax.set_xticks(range(len(arms)), [label(a) for a in arms], rotation=20)
    ax.set_ylabel("normalized score of a run")
    ax.set_title(f"{evidence.dataset}: runs (dots), {statistic} with 95 % interval (black)")
    ax.grid(alpha=0.3, axis="y")
    for i, arm in enumerate(others):
        a, base = evidence.paired(arm)
        d = np.array([a[s] - base[s] for s in a])
        bx.scatter(i + rng.uniform(-0.15, 0.15, d.size), d, s=14, alpha=0.5, color="C1")
        if d.size < 2:
            continue
        iv = evidence.against(arm).difference
        bx.errorbar(
            i + 0.3, iv.estimate, yerr=[[iv.estimate - iv.low], [iv.high - iv.estimate]], fmt="o", color="k", capsize=4
        )
    bx.axhline(0.0, color="k", ls="--", lw=1)
    bx.set_xticks(range(len(others)), [label(a) for a in others], rotation=20)
    bx.set_ylabel(f"minus {label(evidence.baseline)}, same seed")
    bx.set_title("paired differences, mean with t interval")
    bx.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
