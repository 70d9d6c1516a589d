import os

# Tests run in quick mode with a non-interactive Matplotlib backend, whoever starts them.
os.environ.setdefault("KFC_QUICK", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> pathlib.Path:
    return ROOT


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """400 random-policy Hopper transitions in D4RL format, episodes cut at 50 steps (seconds to make): the data of
    the training-loop tests."""
    from kfc_lite.data.collect import RandomPolicy, collect
    from kfc_lite.envs import make_env

    path = tmp_path_factory.mktemp("data") / "hopper-tiny.hdf5"
    env = make_env("hopper")
    collect(
        "hopper-random",
        RandomPolicy(env.action_space, seed=0),
        400,
        seed=0,
        path=path,
        progress=False,
        max_episode_steps=50,
    )
    env.close()
    return str(path)


def checkpoint_tensors(path) -> tuple[int, dict]:
    """A training checkpoint's step and every tensor of its agent, sampler and RNG states, by path in the nesting:
    what two runs that took the same steps must hold bit for bit."""
    import torch

    ckpt = torch.load(path, weights_only=True)
    flat = {}

    def walk(prefix, x):
        if isinstance(x, torch.Tensor):
            flat[prefix] = x
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(f"{prefix}/{i}", v)

    walk("", {k: ckpt[k] for k in ("agent", "sampler", "rng")})
    return int(ckpt["step"]), flat


def pytest_collection_modifyitems(config, items):
    """The browser tests last: they open the notebooks in JupyterLab after the notebook tests have run them and
    left notebook 02's model in notebooks/runs/, which notebook 03 loads instead of training its own."""
    items.sort(key=lambda item: item.path.name == "test_browser.py")  # a stable sort: the rest keep their order
