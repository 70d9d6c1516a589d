"""``qlearning_dataset``: D4RL's (s, a, r, s', done) transitions, computed without a Python loop over rows.

D4RL (``d4rl/__init__.py``) walks the rows i = 0 .. N-2 and
  * takes s' from the *next row*, ``observations[i + 1]``, ignoring any stored ``next_observations``;
  * drops every row that ends an episode at the time limit (``timeouts[i]``, or, in files without ``timeouts``,
    the row where its step counter reaches ``max_episode_steps - 1``), unless ``terminate_on_end``; their s'
    would be the next episode's first state;
  * marks ``terminals`` only for true terminations (a time-out is never "done");
  * always drops the last row, which has no next row.
On a true-terminal row s' is therefore the next episode's first state. TD learning masks the bootstrap there, so
it does no harm, but a dynamics model must not learn from it: pass ``use_next_observations=True`` to take s' from
the stored ``next_observations`` instead (same rows, only s' changes; docs/paper.md, 'The Koopman forward model').

D4RL's step counter, in files without ``timeouts``, has a quirk we reproduce exactly: after a terminal row it
restarts at 1, not 0, so the next episode's "final" row (dropped) comes one step early; after a dropped time-out
row it restarts at 0. With ``terminate_on_end`` every row but the last is kept, so the counter does not matter.
"""

from __future__ import annotations

import numpy as np

from kfc_lite.data.errors import DatasetError


def _final_steps_without_timeouts(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """For rows 0 .. N-2, whether D4RL's step counter calls the row an episode's final (time-limit) step.

    Between terminals the counter runs modulo the episode length (a dropped final row resets it to 0). A terminal
    row resets it to 1, unless that row is itself a final one (then it is dropped and the counter goes to 0, which
    the modulo already does). We walk the terminals, one scalar step each (a few thousand per million rows), to
    find where each stretch starts and its first counter value, then evaluate the counter for all rows at once.
    """
    m = len(terminals) - 1  # rows D4RL visits
    period = max_episode_steps
    starts, values = [0], [0]
    for j in np.flatnonzero(terminals[:m]):
        if (j - starts[-1] + values[-1]) % period == period - 1:
            continue  # a terminal on a final row: dropped as a time-out, the counter restarts at 0
        starts.append(int(j) + 1)
        values.append(1)
    rows = np.arange(m)
    starts_arr, values_arr = np.asarray(starts), np.asarray(values)
    seg = np.searchsorted(starts_arr, rows, side="right") - 1
    counter = (rows - starts_arr[seg] + values_arr[seg]) % period
    return counter == period - 1


def qlearning_dataset(
    data: dict, terminate_on_end: bool = False, use_next_observations: bool = False, *, max_episode_steps: int = 1000
) -> dict:
    """D4RL's ``qlearning_dataset(env, dataset=data)``, vectorized.

    Returns ``observations``, ``actions``, ``next_observations`` (float32, (M, dim)), ``rewards`` (float32, (M,))
    and ``terminals`` (bool, (M,)). ``max_episode_steps`` only matters for files without ``timeouts`` (D4RL's
    MuJoCo environments all use 1000).
    """
    for key in ("observations", "actions", "rewards", "terminals"):
        if key not in data:
            raise DatasetError(f"qlearning_dataset: the data has no '{key}'; pass a dict from kfc_lite.data.load")
    if use_next_observations and "next_observations" not in data:
        raise DatasetError(
            "qlearning_dataset(use_next_observations=True): the data has no 'next_observations' "
            "(D4RL's v0 files lack them); use the default, or generate data with kfc-lite data make"
        )
    if max_episode_steps < 2:
        raise ValueError(f"max_episode_steps must be at least 2, got {max_episode_steps}")
    obs = data["observations"]
    n = len(obs)
    terminals = np.asarray(data["terminals"]).reshape(n).astype(bool)
    if terminate_on_end:  # final rows are kept too: every row but the last
        keep = np.ones(max(n - 1, 0), dtype=bool)
    elif "timeouts" in data:
        keep = ~np.asarray(data["timeouts"]).reshape(n).astype(bool)[: max(n - 1, 0)]
    else:
        keep = ~_final_steps_without_timeouts(terminals, max_episode_steps)
    rows = np.flatnonzero(keep)

    def take(arr, idx):
        # fancy indexing makes the one copy; astype(copy=False) adds none when the file is already float32
        return np.asarray(arr)[idx].astype(np.float32, copy=False)

    next_obs = take(data["next_observations"], rows) if use_next_observations else take(obs, rows + 1)
    return {
        "observations": take(obs, rows),
        "actions": take(data["actions"], rows),
        "next_observations": next_obs,
        "rewards": np.asarray(data["rewards"]).reshape(n)[rows].astype(np.float32, copy=False),
        "terminals": terminals[rows],
    }
