"""Koopman tools: toy systems, DMD/EDMD and observables (NumPy), and the Koopman forward model with control (PyTorch).

Names are imported lazily, so the NumPy-only part (notebook 01) does not pay for importing torch.
"""

from kfc_lite._lazy import lazy_exports

#: public name -> submodule of kfc_lite.koopman that defines it
_EXPORTS = {
    # toy systems with a known answer (systems.py)
    "LinearSystem": "systems",
    "SlowManifold": "systems",
    "Pendulum": "systems",
    "Duffing": "systems",
    "VanDerPol": "systems",
    # DMD / EDMD (edmd.py) and dictionaries (observables.py)
    "DMD": "edmd",
    "EDMD": "edmd",
    "Identity": "observables",
    "Polynomial": "observables",
    "RadialBasis": "observables",
    # controlled systems, transitions from gymnasium, EDMD with control (control.py)
    "LinearControlSystem": "control",
    "BilinearControlSystem": "control",
    "ForcedPendulum": "control",
    "gym_transitions": "control",
    "EDMDc": "control",
    # the neural Koopman forward model (model.py), its settings and loss (objective.py), its training loop
    # (fit.py) and its open-loop error (multistep.py)
    "KoopmanForwardModel": "model",
    "save_koopman": "model",
    "load_koopman": "model",
    "KoopmanTrainConfig": "objective",
    "fit_koopman": "fit",
    "multistep_error": "multistep",
    # how good a trained model is for KFC, and the gate train() applies (report.py)
    "koopman_report": "report",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
