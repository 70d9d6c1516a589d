"""``kfc-lite data``: list, download, inspect and generate D4RL-format datasets.

* ``kfc-lite data list [--env hopper] [--version v2]``
* ``kfc-lite data download NAME [--dest DIR] [--url URL] [--wait SECONDS]``
* ``kfc-lite data info NAME_OR_PATH``          size, episodes, returns, normalized score of the data's episodes
* ``kfc-lite data make RECIPE [--size N] [--seed S] [--out PATH] [--overwrite] [--policy FILE]``
  recipes ``<env>-<kind>-replica`` for the five D4RL kinds (``kfc_lite.data.replicas``): random (D4RL's uniform
  random policy), medium and expert (rollouts of the committed behaviour policies in ``policies/``, or
  ``--policy FILE``), medium-replay (the online run's replay buffer up to the medium policy) and medium-expert
  (medium then expert data); ``pendulum-<kind>-replica`` makes the same five for the library's pendulum task,
  5000 transitions by default (docs/pendulum.md); without ``--out`` the file goes to the cache under the
  replica's name, where ``kfc_lite.data.load('<env>-<kind>-replica')`` finds it. An existing file is never
  replaced without ``--overwrite``: a full-size replica takes hours to make.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="list, download, inspect and generate D4RL datasets")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    q = sub.add_parser("list", help="the D4RL MuJoCo datasets we know, with reference scores and cache state")
    q.add_argument("--env", choices=["halfcheetah", "hopper", "walker2d", "pendulum"], help="only this environment")
    q.add_argument("--version", choices=["v0", "v2", "replica"], help="only this version")
    q.set_defaults(func=_list)

    q = sub.add_parser("download", help="download a dataset into the cache (resumes an interrupted download)")
    q.add_argument("name", help="e.g. hopper-medium-v2")
    q.add_argument("--dest", help="folder to download into (default: $D4RL_DATASET_DIR or ~/.d4rl/datasets)")
    q.add_argument("--url", help="download from this address instead (a mirror)")
    q.add_argument("--checksum", help="expected 'sha256:<hex>' or 'md5:<hex>' of the file")
    q.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds the server may stay silent, connecting or mid-file (default 60)",
    )
    q.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="while another process downloads the same dataset, wait at most this long for it (default: "
        "until it finishes; 0: give up at once)",
    )
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_download)

    q = sub.add_parser("info", help="size, episodes, returns and normalized score of a dataset")
    q.add_argument("name", help="a dataset name (from the cache) or an HDF5 path")
    q.add_argument("--download", action="store_true", help="download a dataset that is not in the cache")
    q.set_defaults(func=_info)

    q = sub.add_parser("make", help="generate a D4RL-format replica dataset with gymnasium (MuJoCo, or the pendulum)")
    q.add_argument(
        "recipe",
        help="<env>-<kind>-replica: env in halfcheetah, hopper, walker2d, pendulum; kind in "
        "random, medium, medium-replay, medium-expert, expert (<env>-random also works)",
    )
    q.add_argument(
        "--size",
        type=int,
        default=None,
        help="number of transitions (default: D4RL's, 1000000, 2000000 for medium-expert, the whole "
        "recorded buffer for medium-replay; pendulum: 5000, 10000 for medium-expert)",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the environment and the random policy (default 0)")
    q.add_argument("--out", help="HDF5 file to write (default: the cache, under the replica's name)")
    q.add_argument("--overwrite", action="store_true", help="replace the output file if it exists (default: refuse)")
    q.add_argument(
        "--policy",
        help="behaviour policy file (kfc_lite.rl.save_policy); default: the committed card's, "
        "policies/<env>-<level>.pt (medium for medium-expert)",
    )
    q.add_argument("--expert-policy", help="medium-expert: the expert policy file (default: policies/<env>-expert.pt)")
    q.add_argument("--buffer", help="medium-replay: the online run's checkpoint.pt (default: the medium card's)")
    q.add_argument("--up-to-step", type=int, help="medium-replay: the last recorded step (default: the medium card's)")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=_make)


def _list(args: argparse.Namespace) -> int:
    from kfc_lite.data import registry
    from kfc_lite.data.download import cache_path

    names = registry.names(env=args.env, version=args.version)
    print(f"{'name':<32} {'gymnasium':<15} {'ref min':>12} {'ref max':>10}  cached")
    for name in names:
        info = registry.get(name)
        cached = "yes" if os.path.exists(cache_path(name)) else ""
        print(f"{name:<32} {info.gym_id:<15} {info.ref_min_score:>12.6g} {info.ref_max_score:>10.6g}  {cached}")
    print(
        f"{len(names)} datasets; scores are normalized as 100 * (R - ref min) / (ref max - ref min). "
        "Replicas are generated locally (kfc-lite data make)."
    )
    return 0


def _download(args: argparse.Namespace) -> int:
    from kfc_lite.data.download import download

    path = download(
        args.name,
        dest=args.dest,
        url=args.url,
        checksum=args.checksum,
        timeout=args.timeout,
        progress=not args.no_progress,
        wait=args.wait,
    )
    print(path)
    return 0


def describe(data: dict, source: str) -> str:
    """A short report of a loaded dataset: size, episodes, returns and normalized score."""
    from kfc_lite.data.hdf5 import episode_returns, split_episodes
    from kfc_lite.data.registry import normalized_score
    from kfc_lite.envs import env_family

    n = len(data["observations"])
    starts, ends, complete = split_episodes(data)
    returns, lengths = episode_returns(data)
    lines = [
        f"{source}",
        f"  transitions: {n}  (observations {data['observations'].shape[1]}-D, actions {data['actions'].shape[1]}-D)",
        f"  episodes: {len(starts)} ({int(complete.sum())} complete"
        + ("" if complete.all() else ", the last one cut by the end of the file")
        + ")",
        f"  terminals: {int(np.sum(data['terminals']))}, timeouts: "
        + (str(int(np.sum(data["timeouts"]))) if "timeouts" in data else "no 'timeouts' key (1000-step rule)"),
        f"  episode length: mean {lengths.mean():.1f}, min {lengths.min()}, max {lengths.max()}",
    ]
    full = returns[complete] if complete.any() else returns
    lines.append(
        f"  return of {'complete ' if complete.any() else ''}episodes: mean {full.mean():.2f}, "
        f"min {full.min():.2f}, max {full.max():.2f}"
    )
    try:
        family = env_family(data)
    except (ValueError, KeyError):
        family = None
    if family:
        lines.append(f"  normalized score ({family}): mean {normalized_score(family, full).mean():.1f}")
    meta = {k[len("metadata/") :]: v for k, v in data.items() if k.startswith("metadata/") and not hasattr(v, "shape")}
    if meta:
        lines.append("  metadata: " + ", ".join(f"{k}={v}" for k, v in sorted(meta.items())))
    extra = sorted(k for k in data if not k.startswith("metadata/"))
    lines.append("  keys: " + ", ".join(extra))
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    from kfc_lite.data.sources import load

    data = load(args.name, download=args.download)
    source = args.name
    if os.path.exists(args.name):
        source += f" ({os.path.getsize(args.name) / 2**20:.1f} MiB)"
    print(describe(data, source))
    return 0


def _make(args: argparse.Namespace) -> int:
    from kfc_lite.data.replicas import make_replica, parse_recipe

    env, kind = parse_recipe(args.recipe)
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive number of transitions, got {args.size}")
    if args.policy is not None and not os.path.exists(args.policy):
        raise FileNotFoundError(f"--policy {args.policy}: no such file")
    name = f"{env}-{kind}-replica"
    out = args.out or _cache_file(name)
    make_replica(
        name,
        size=args.size,
        seed=args.seed,
        out=out,
        policy=args.policy,
        expert_policy=args.expert_policy,
        buffer=args.buffer,
        up_to_step=args.up_to_step,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(out)
    return 0


def _cache_file(name: str) -> str:
    from kfc_lite.data.download import cache_path

    return cache_path(name)
