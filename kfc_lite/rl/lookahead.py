"""Batches drawn ahead, with the Koopman eigen-decomposition of their ``K(a)`` started on worker threads.

Why: KFC and KFC++ decompose the 32x32 operator ``K(a)`` of every transition of every batch
(``torch.linalg.eig``). LAPACK's ``geev`` does one matrix at a time on one core: 75-95 ms for a batch of
256 on our CPUs (benchmarks/eig.py), and on a GPU it runs on the host too and makes the device wait
(benchmarks/NOTES.md). The operators depend only on the batch's actions and the frozen Koopman model, so they
can be decomposed before the batch's step, on cores the step does not use: the host's cores while a GPU trains,
or a spare core of a CPU whose step runs on fewer threads than it has cores.

Only the batches that drew the symmetry branch are decomposed: the branch is drawn when the batch is drawn
(from the augmenter's own generator, :meth:`~kfc_lite.rl.augment.KoopmanAugmenter.draw_branch`), so at the
authors' ``p_koopman = 0.8`` a fifth of the batches cost the workers nothing. With ``depth`` above 1 the
workers run ahead through those batches, and their average load per step falls by that fifth.

What stays exact: batches are drawn by the wrapped sampler in the same order, their branches by the
augmenter's generator in the same order, ``K(a)`` is computed on the training thread as the augmenter would
compute it, and each matrix goes through the same LAPACK call; the other random draws (``eps``, the noise)
stay in the training step. So a run with lookahead takes the same steps as one without (tested), and its
checkpoints hold the sampler's and the augmenter's states as of the next batch to be trained on
(:meth:`LookaheadSampler.state_dict`, :meth:`LookaheadSampler.augmenter_state_dict`): a resumed run draws
the pending batches again.
"""
from __future__ import annotations

import collections
import os

from kfc_lite.rl.augment import PREPARED_KEY, KoopmanAugmenter
from kfc_lite.settings import thread_pool

__all__ = ["LookaheadSampler", "available_cores", "default_eig_workers"]


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_eig_workers(device_type: str) -> int:
    """What ``eig_workers="auto"`` means: on a GPU every host core but one (at most 16); on the CPU none.

    On the CPU a worker only helps if a core would otherwise sit idle, which the library cannot know (another
    job may hold it: on our 2-core machines a worker beside a 2-thread step slowed the step by half), so a
    CPU run uses lookahead only when asked (``eig_workers=N``).
    """
    if device_type == "cuda":
        return max(1, min(available_cores() - 1, 16))
    return 0


class LookaheadSampler:
    """Wraps a batch sampler: ``sample()`` returns its batches in order, each carrying the
    :class:`~kfc_lite.rl.augment.PreparedOperators` (``batch["koopman_prepared"]``) that the Koopman augmenter
    uses instead of decomposing ``K(a)`` itself.

    Parameters
    ----------
    sampler : a :class:`~kfc_lite.rl.replay.TransitionSampler` (anything with ``sample()``, ``snapshot()``,
        ``state_dict(snapshot)`` and ``load_state_dict``).
    augmenter : the run's :class:`~kfc_lite.rl.augment.KoopmanAugmenter`.
    workers : threads decomposing operators (>= 1).
    depth : batches kept in flight beyond the one being trained on (default ``workers + 1``: each worker has
        one, and one more lets a worker go on past a batch that needs no decomposition).

    ``state_dict()`` is the wrapped sampler's state before the oldest batch not yet returned, and
    ``augmenter_state_dict()`` the augmenter's (its branch draw) at that point; ``close()`` (or leaving a
    ``with`` block) stops the workers and gives the pending batches back to both.
    """

    def __init__(self, sampler, augmenter: KoopmanAugmenter, workers: int = 1, depth: int | None = None):
        if not isinstance(augmenter, KoopmanAugmenter):
            raise TypeError(f"lookahead prepares Koopman operators: it needs the run's KoopmanAugmenter, got "
                            f"{type(augmenter).__name__} (CQL and S4RL have no eigen-decomposition to move)")
        for attr in ("sample", "snapshot", "state_dict", "load_state_dict"):
            if not callable(getattr(sampler, attr, None)):
                raise TypeError(f"lookahead needs a sampler with {attr}() (a TransitionSampler); "
                                f"{type(sampler).__name__} has none")
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers must be a positive integer (threads decomposing K(a)), got {workers!r}")
        depth = workers + 1 if depth is None else depth
        if not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f"depth must be a positive integer (batches prepared ahead), got {depth!r}")
        self.sampler, self.augmenter, self.workers, self.depth = sampler, augmenter, workers, depth
        # each worker's own torch ops (norms, inverses of a batch) on one thread, so that N workers use N cores
        self._executor = thread_pool(workers, 1, "kfc_lite-eig")
        # (sampler snapshot before the batch, augmenter state before it, batch)
        self._pending: collections.deque = collections.deque()

    def __len__(self) -> int:
        return len(self.sampler)

    def _draw(self) -> None:
        snapshot, augmenter_state = self.sampler.snapshot(), self.augmenter.state_dict()
        batch = self.sampler.sample()
        batch[PREPARED_KEY] = self.augmenter.prepare(batch["actions"], self._executor)
        self._pending.append((snapshot, augmenter_state, batch))

    def sample(self) -> dict:
        if self._executor is None:
            raise RuntimeError("this LookaheadSampler was closed")
        while len(self._pending) <= self.depth:
            self._draw()
        return self._pending.popleft()[2]

    def wait(self) -> None:
        """Block until every batch drawn ahead has its decomposition (e.g. to time a block of steps fairly)."""
        for *_, batch in self._pending:
            batch[PREPARED_KEY].eig()

    def state_dict(self) -> dict:
        if self._pending:
            return self.sampler.state_dict(self._pending[0][0])
        return self.sampler.state_dict()

    def augmenter_state_dict(self) -> dict:
        """The augmenter's state as of the next batch to be trained on (its own has moved on by the batches
        drawn ahead): what a checkpoint saves beside :meth:`state_dict`."""
        if self._pending:
            return self._pending[0][1]
        return self.augmenter.state_dict()

    def load_state_dict(self, state: dict, augmenter_state: dict | None = None) -> None:
        """Restore the wrapped sampler and, if given, the augmenter (``augmenter_state``, from
        :meth:`augmenter_state_dict`). The batches drawn ahead are dropped first, which rewinds the augmenter to
        the oldest of them: restore the augmenter here, or on the augmenter after this call, never before it."""
        self._drop_pending()
        self.sampler.load_state_dict(state)
        if augmenter_state is not None:
            self.augmenter.load_state_dict(augmenter_state)

    def _drop_pending(self) -> None:
        """Forget the batches drawn ahead, rewinding the wrapped sampler and the augmenter to the oldest of them."""
        if self._pending:
            snapshot, augmenter_state, _ = self._pending[0]
            self.sampler.load_state_dict(self.sampler.state_dict(snapshot))
            self.augmenter.load_state_dict(augmenter_state)
        for *_, batch in self._pending:
            batch[PREPARED_KEY].cancel()
        self._pending.clear()

    def close(self) -> None:
        if self._executor is not None:
            self._drop_pending()
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> "LookaheadSampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LookaheadSampler(workers={self.workers}, depth={self.depth}, sampler={self.sampler!r})"
