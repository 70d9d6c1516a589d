"""The D4RL MuJoCo locomotion datasets: names, files, download addresses, environments, reference scores.

Names follow D4RL: ``<env>-<kind>-<version>`` with env in {halfcheetah, hopper, walker2d}, kind in {random,
medium, medium-replay, medium-expert, expert} and version in {v0, v2}. The paper (and the CQL numbers it quotes)
used ``-v0``; ``-v2`` is what most later work reports. Report the version with every number.

Our own, locally generated stand-ins are named ``<env>-<kind>-replica`` (``kfc-lite data make``). They share the
environment and the reference scores of the D4RL dataset they imitate, but not its data: a score on a replica is
not a score on D4RL.

Sources: file names and addresses from D4RL's ``d4rl/infos.py`` and ``d4rl/gym_mujoco/__init__.py``; reference
returns (``REF_MIN_SCORE``/``REF_MAX_SCORE``) from ``d4rl/infos.py``, where every v0/v1/v2 MuJoCo dataset of one
environment shares the ``<env>-random-v0`` pair. D4RL publishes no checksums, so none is recorded here
(``DatasetInfo.checksum`` is ``None``); pass one to :func:`kfc_lite.data.download` if you have it.

What a name promises, checked on every download and cache hit (:mod:`kfc_lite.data.identity`): the observation
and action sizes of its environment (:data:`OBS_DIM`, :data:`ACT_DIM`) and, where we know it, the number of rows
of D4RL's file (:data:`D4RL_ROWS`).

One task of our own has replicas and no D4RL file: ``pendulum`` (gymnasium's ``Pendulum-v1`` with its torque
rescaled to [-1, 1]), the course's low-dimensional thread, small enough that every method converges on a CPU.
Its names are ``pendulum-<kind>-replica`` and its reference returns were measured here (docs/pendulum.md).

Environment choice: ``HalfCheetah-v4``, ``Hopper-v4`` and ``Walker2d-v4``. D4RL's data come from gym's ``-v3``
MuJoCo environments (mujoco-py). Gymnasium's ``-v4`` keeps their XML models, rewards, observations (17/11/17
values, 6/3/6 actions) and 1000-step limit on the new ``mujoco`` bindings. ``-v5`` has the same dimensions but
changes the models (for example, Walker2d-v5 gives both feet the same friction, where ``-v3``/``-v4`` give the
left foot 0.9 and the right 1.9). Its dynamics therefore differ from the data. Gymnasium 1.x marks ``-v4`` as out
of date but still makes it; :func:`kfc_lite.envs.make_env` hides that one warning, and any gymnasium id (e.g.
``Hopper-v5``) can still be passed by hand.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

from kfc_lite.data.errors import UnknownDatasetError

#: D4RL's MuJoCo families: D4RL files (v0, v2) and our replicas of them.
ENVS = ("halfcheetah", "hopper", "walker2d")
#: tasks of our own: replicas only, with reference returns measured here rather than D4RL's (docs/pendulum.md).
REPLICA_ONLY_ENVS = ("pendulum",)
#: every environment family a dataset name can start with.
FAMILIES = ENVS + REPLICA_ONLY_ENVS
KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")

#: environment family -> gymnasium id (see the module docstring for why ``-v4``).
GYM_IDS = {"halfcheetah": "HalfCheetah-v4", "hopper": "Hopper-v4", "walker2d": "Walker2d-v4", "pendulum": "Pendulum-v1"}
#: families whose gymnasium action box is not [-1, 1]: :func:`kfc_lite.envs.make_env` rescales their actions to
#: [-1, 1] (gymnasium's ``RescaleAction``), the box of the agent's tanh policy. Pendulum-v1's torque is in [-2, 2],
#: so an action of 1 applies a torque of 2. Rewards are not touched, so returns are gymnasium's own.
RESCALED_ACTIONS = ("pendulum",)
#: gymnasium class-name prefix (lower case) -> family; ``Walker2d-v5`` and ``HalfCheetah-v2`` map the same way.
_GYM_PREFIX = {"halfcheetah": "halfcheetah", "hopper": "hopper", "walker2d": "walker2d"}

#: Reference returns: the return of a random policy and of an expert (SAC) policy, per environment. D4RL's for its
#: three families; pendulum's measured here the same way (docs/pendulum.md): the mean return of uniform random
#: actions, and of a fully trained SAC policy acting with its mean action, each over 1000 episodes.
REF_MIN_SCORE = {"halfcheetah": -280.178953, "hopper": -20.272305, "walker2d": 1.629008, "pendulum": -1230.09}
REF_MAX_SCORE = {"halfcheetah": 12135.0, "hopper": 3234.3, "walker2d": 4592.3, "pendulum": -149.97}

#: Observation and action sizes of each family (gym's -v3 and gymnasium's -v4/-v5 agree). HalfCheetah and Walker2d
#: share 17/6, so sizes alone cannot tell those two apart; :mod:`kfc_lite.data.identity` adds a physical test.
OBS_DIM = {"halfcheetah": 17, "hopper": 11, "walker2d": 17, "pendulum": 3}  # pendulum: cos, sin, angular velocity
ACT_DIM = {"halfcheetah": 6, "hopper": 3, "walker2d": 6, "pendulum": 1}

#: Rows of D4RL's -v2 files where the count is agreed on: random and medium data stop at 1,000,000 transitions
#: (the sample count of D4RL's generation script), and the medium-replay sizes are those the D4RL v2 statistics
#: quote (the figures of ``kfc_lite.data.replicas.D4RL_PUBLISHED``). None was re-measured here: the files cannot be
#: downloaded on the project's machines. Expert and medium-expert counts are quoted inconsistently (some files
#: lose rows to cut episodes) and v0's replay files differ again: those names have no entry, so their row count is
#: not checked rather than checked against a guess.
D4RL_ROWS = {
    **{f"{env}-{kind}-v2": 1_000_000 for env in ENVS for kind in ("random", "medium")},
    "halfcheetah-medium-replay-v2": 202_000,
    "hopper-medium-replay-v2": 402_000,
    "walker2d-medium-replay-v2": 302_000,
}

#: Every D4RL MuJoCo episode is cut at this many steps (``max_episode_steps`` of D4RL's registrations).
MAX_EPISODE_STEPS = 1000
#: Families whose episodes are cut sooner: gymnasium's own limit for Pendulum-v1.
EPISODE_STEPS = {"pendulum": 200}

_BASE = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
# v0 file names are not regular: medium-replay was called "mixed", and walker2d's was "walker_mixed".
_V0_FILES = {
    (env, kind): f"{env}_{kind.replace('-', '_')}.hdf5" for env in ENVS for kind in KINDS if kind != "medium-replay"
}
_V0_FILES.update(
    {
        ("halfcheetah", "medium-replay"): "halfcheetah_mixed.hdf5",
        ("hopper", "medium-replay"): "hopper_mixed.hdf5",
        ("walker2d", "medium-replay"): "walker_mixed.hdf5",
    }
)


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: where its file comes from, which environment made it, and how its returns are scored."""

    name: str  #: e.g. ``hopper-medium-v2`` or ``hopper-medium-replica``
    env: str  #: environment family: halfcheetah, hopper, walker2d (D4RL's) or pendulum (replicas only)
    kind: str  #: random, medium, medium-replay, medium-expert or expert
    version: str  #: v0, v2, or ``replica`` for our locally generated stand-ins
    file_name: str  #: the name in the cache folder (D4RL's own, so d4rl and kfc-lite share one cache)
    url: str | None  #: download address; ``None`` for replicas, which are generated, not downloaded
    gym_id: str  #: the gymnasium environment that evaluates a policy trained on this dataset
    ref_min_score: float
    ref_max_score: float
    obs_dim: int  #: observation size of the environment (:data:`OBS_DIM`)
    act_dim: int  #: action size of the environment (:data:`ACT_DIM`)
    rows: int | None = None  #: rows of D4RL's file when known (:data:`D4RL_ROWS`); ``None``: not checked
    checksum: str | None = None  #: ``"sha256:<hex>"`` or ``"md5:<hex>"`` when known; D4RL publishes none
    max_episode_steps: int = MAX_EPISODE_STEPS

    @property
    def replica(self) -> bool:
        return self.version == "replica"


def _env_fields(env: str) -> dict:
    """What every dataset of one environment shares: its gymnasium id, reference returns and sizes."""
    return dict(
        env=env,
        gym_id=GYM_IDS[env],
        ref_min_score=REF_MIN_SCORE[env],
        ref_max_score=REF_MAX_SCORE[env],
        obs_dim=OBS_DIM[env],
        act_dim=ACT_DIM[env],
    )


def _build() -> dict[str, DatasetInfo]:
    out = {}
    for env in ENVS:
        ref = _env_fields(env)
        for kind in KINDS:
            v0 = _V0_FILES[(env, kind)]
            out[f"{env}-{kind}-v0"] = DatasetInfo(
                f"{env}-{kind}-v0", kind=kind, version="v0", file_name=v0, url=f"{_BASE}/gym_mujoco/{v0}", **ref
            )
            v2 = f"{env}_{kind.replace('-', '_')}-v2.hdf5"
            out[f"{env}-{kind}-v2"] = DatasetInfo(
                f"{env}-{kind}-v2",
                kind=kind,
                version="v2",
                file_name=v2,
                url=f"{_BASE}/gym_mujoco_v2/{v2}",
                rows=D4RL_ROWS.get(f"{env}-{kind}-v2"),
                **ref,
            )
            rep = f"{env}_{kind.replace('-', '_')}-replica.hdf5"
            out[f"{env}-{kind}-replica"] = DatasetInfo(
                f"{env}-{kind}-replica", kind=kind, version="replica", file_name=rep, url=None, **ref
            )
    for env in REPLICA_ONLY_ENVS:
        ref = dict(_env_fields(env), max_episode_steps=EPISODE_STEPS[env])
        for kind in KINDS:
            name = f"{env}-{kind}-replica"
            out[name] = DatasetInfo(
                name,
                kind=kind,
                version="replica",
                file_name=f"{env}_{kind.replace('-', '_')}-replica.hdf5",
                url=None,
                **ref,
            )
    return out


#: name -> :class:`DatasetInfo` for every dataset we know (D4RL v0 and v2, and our replica names).
DATASETS: dict[str, DatasetInfo] = _build()


def names(*, env: str | None = None, version: str | None = None, replicas: bool = True) -> list[str]:
    """Known dataset names, optionally only one environment family or one version (``v0``, ``v2``, ``replica``)."""
    return [
        n
        for n, info in DATASETS.items()
        if (env is None or info.env == env)
        and (version is None or info.version == version)
        and (replicas or not info.replica)
    ]


def _unknown(name: str, choices, what: str) -> UnknownDatasetError:
    close = difflib.get_close_matches(str(name).lower(), list(choices), n=5, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownDatasetError(
        f"unknown {what} {name!r}.{hint} Known names look like 'hopper-medium-v2', 'halfcheetah-random-v0', "
        f"'walker2d-expert-replica' or 'pendulum-medium-replica'; `kfc-lite data list` prints them all."
    )


def get(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset name (case-insensitive); unknown names list close matches."""
    if isinstance(name, DatasetInfo):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a dataset name must be a string like 'hopper-medium-v2', got {type(name).__name__}")
    key = name.strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    raise _unknown(name, DATASETS, "dataset")


def is_known(name) -> bool:
    return isinstance(name, str) and name.strip().lower() in DATASETS


def family_of(name: str) -> str:
    """The environment family of a dataset name, a family name, or a gymnasium id.

    ``'hopper-medium-v2'``, ``'hopper-random-replica'``, ``'hopper'``, ``'Hopper-v5'`` -> ``'hopper'``.
    ``'pendulum-medium-replica'``, ``'pendulum'`` -> ``'pendulum'``; the gymnasium id ``'Pendulum-v1'`` is not
    mapped: it names gymnasium's own environment, whose torque box is [-2, 2], not the library's task.
    """
    if not isinstance(name, str):
        raise TypeError(f"expected a name like 'hopper-medium-v2', 'hopper' or 'Hopper-v4', got {name!r}")
    key = name.strip().lower()
    if key in DATASETS:
        return DATASETS[key].env
    if key in FAMILIES:
        return key
    m = re.fullmatch(r"(halfcheetah|hopper|walker2d)-v\d+", key)  # gymnasium ids: HalfCheetah-v4, Walker2d-v5
    if m:
        return _GYM_PREFIX[m.group(1)]
    # a recipe such as 'hopper-random' (no version): the family is clear even though it is not a dataset name
    m = re.fullmatch(r"(" + "|".join(FAMILIES) + r")-(" + "|".join(KINDS) + r")", key)
    if m:
        return m.group(1)
    choices = list(DATASETS) + list(FAMILIES) + [GYM_IDS[e] for e in ENVS]
    raise _unknown(name, [c.lower() for c in choices], "dataset, environment family or gymnasium id")


def max_episode_steps(name: str) -> int:
    """The episode length limit of a dataset name's or a family's environment (1000 for D4RL's, 200 for pendulum)."""
    return EPISODE_STEPS.get(family_of(name), MAX_EPISODE_STEPS)


def reference_scores(name: str) -> tuple[float, float]:
    """``(REF_MIN_SCORE, REF_MAX_SCORE)`` for a dataset name, family or gymnasium id."""
    env = family_of(name)
    return REF_MIN_SCORE[env], REF_MAX_SCORE[env]


def normalized_score(name: str, returns):
    """D4RL's normalized score, 100 * (R - R_min) / (R_max - R_min), of undiscounted episode returns ``R``.

    ``name`` is a dataset name (``hopper-medium-v2``), a family (``hopper``) or a gymnasium id (``Hopper-v5``).
    A number gives a float, a list or array gives an array of the same shape. D4RL's own
    ``get_normalized_score`` returns the fraction; this returns percent, as papers report it.
    """
    lo, hi = reference_scores(name)
    arr = np.asarray(returns, dtype=np.float64)
    score = 100.0 * (arr - lo) / (hi - lo)
    if arr.ndim == 0 and not isinstance(returns, np.ndarray):
        return float(score)
    return score
