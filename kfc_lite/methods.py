"""The methods the course compares, named once: every module that takes a method name checks it against these.

``cql`` trains on the logged states, ``s4rl`` adds Gaussian noise to them, ``kfc`` and ``kfc++`` move them along
symmetries of a learned Koopman model (docs/paper.md, 'The symmetry augmentation').
"""

METHODS = ("cql", "s4rl", "kfc", "kfc++")
#: the methods that need a Koopman model (and its symmetry table)
KOOPMAN_METHODS = ("kfc", "kfc++")
