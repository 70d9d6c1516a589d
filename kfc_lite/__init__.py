"""kfc-lite: a hands-on course on Koopman Q-learning (KFC, Weissenbacher et al., ICML 2022).

The library holds the heavy pieces the notebooks import:

* ``kfc_lite.koopman``  toy systems, DMD/EDMD (NumPy) and the Koopman forward model with control (PyTorch)
* ``kfc_lite.symmetry`` symmetries read off the learned operator (KFC, KFC++); ``kfc_lite.symmetry_table`` the
  same numbers computed once per dataset for training
* ``kfc_lite.rl``       networks, SAC+CQL, augmenters (none, S4RL noise, KFC, KFC++)
* ``kfc_lite.data``     D4RL names, download and cache, loading, ``qlearning_dataset``, generated datasets
* ``kfc_lite.envs``     D4RL name -> gymnasium environment, evaluation, normalized scores
* ``kfc_lite.train``    one training loop for every method, with run folders and resume
* ``kfc_lite.sweep``    many runs (datasets x methods x seeds x settings) on Ray
* ``kfc_lite.stats``    scores across seeds: means, IQM, bootstrap and paired intervals; ``kfc_lite.evidence`` the
  committed experiments' results, read back
* ``kfc_lite.settings`` quick mode, devices, seeds, threads and memory settings
* ``kfc_lite.viz``      figures and ipywidgets explorers
* ``kfc_lite.exercises`` the checks behind the coursework exercises
"""

from kfc_lite.settings import quick_mode, resolve_device, seed_everything

__version__ = "0.1.0"
__all__ = ["quick_mode", "resolve_device", "seed_everything", "__version__"]
