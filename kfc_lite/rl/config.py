"""Every hyperparameter of SAC+CQL in one dataclass, :class:`SACConfig`, and named settings of it, :data:`PRESETS`.

docs/paper.md, 'The offline RL base', lists the authors' values, which are the defaults here.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

from kfc_lite.validators import flag, integer, number, one_of, widths

__all__ = ["SACConfig", "PRESETS", "PRECISIONS"]

#: "auto" is fp32 for every method on every device: bf16 rounds the critic's activations to 3 significant digits,
#: which erases the state shifts S4RL, KFC and KFC++ are about (docs/precision.md)
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class SACConfig:
    """Every hyperparameter of SAC+CQL. The defaults are the authors' KFC code (docs/paper.md, 'The offline RL base').

    Entropy: ``alpha`` is the temperature, fixed unless ``auto_alpha`` (then it is the initial value, tuned
    towards ``target_entropy``, default ``-action_dim``). ``backup_entropy`` keeps ``-alpha log pi(a'|s')``
    in the TD target (the KFC code does; official CQL and CORL do not: docs/paper.md, 'The offline RL base').

    CQL: the penalty per critic is ``cql_weight * (T logsumexp(Q_ood / T) - Q_data)`` (importance-sampled,
    ``T = cql_temperature``, ``cql_n_actions`` actions from each of: uniform, pi(.|s), pi(.|s')). With
    ``lagrange=True`` it is multiplied by ``alpha' = exp(log alpha')``, learned so that the gap approaches
    ``lagrange_threshold`` (the KFC code: threshold 10, initial alpha' 1, so an initial weight of 10);
    with ``lagrange=False`` the weight stays ``cql_weight``. ``cql_weight=0`` or ``online=True`` turns the
    penalty off (plain SAC); ``online=True`` also skips the behaviour-cloning warm-up.

    ``bc_steps``: for the first updates the actor minimises ``alpha log pi - log pi(a_data|s)``.
    """

    hidden: tuple = (256, 256)
    n_critics: int = 2
    policy_lr: float = 1e-4
    q_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 5e-3
    batch_size: int = 256
    # entropy
    alpha: float = 0.2
    auto_alpha: bool = False
    alpha_lr: float = 1e-4  # the KFC code tunes alpha with the policy's lr
    target_entropy: float | None = None
    backup_entropy: bool = True
    # CQL
    cql_weight: float = 10.0
    cql_n_actions: int = 10
    cql_temperature: float = 1.0
    lagrange: bool = True
    lagrange_threshold: float = 10.0
    alpha_prime_lr: float = 3e-4
    alpha_prime_max: float = 1e6
    bc_steps: int = 40_000
    online: bool = False
    # speed: "auto" is resolved for the agent's device by for_device (fp32; torch.compile on CUDA only)
    precision: str = "auto"
    compile: object = "auto"

    def __post_init__(self):
        self.hidden = widths("SACConfig.hidden", self.hidden)
        for name in ("n_critics", "batch_size", "cql_n_actions"):
            integer(f"SACConfig.{name}", getattr(self, name), 1)
        integer("SACConfig.bc_steps (0 turns the warm-up off)", self.bc_steps, 0)
        for name in ("policy_lr", "q_lr", "alpha_lr", "alpha_prime_lr", "cql_temperature", "alpha_prime_max"):
            number(f"SACConfig.{name}", getattr(self, name), 0.0, low_open=True)
        number("SACConfig.gamma (a discount)", self.gamma, 0.0, 1.0)
        number("SACConfig.tau (the Polyak rate; 1 copies the critic)", self.tau, 0.0, 1.0, low_open=True)
        number("SACConfig.alpha", self.alpha, 0.0)
        if self.auto_alpha and self.alpha == 0:
            raise ValueError("SACConfig.alpha must be > 0 with auto_alpha (it is tuned in log space), got 0")
        number("SACConfig.cql_weight (0 turns CQL off)", self.cql_weight, 0.0)
        number("SACConfig.lagrange_threshold", self.lagrange_threshold)
        number("SACConfig.target_entropy (None: -action_dim)", self.target_entropy, allow_none=True)
        for name in ("auto_alpha", "backup_entropy", "lagrange", "online"):
            flag(f"SACConfig.{name}", getattr(self, name))
        one_of("SACConfig.precision", self.precision, PRECISIONS)
        if self.compile != "auto" and not isinstance(self.compile, bool):
            raise ValueError(f"SACConfig.compile must be 'auto', True or False, got {self.compile!r}")

    @property
    def use_cql(self) -> bool:
        return not self.online and self.cql_weight > 0

    def for_device(self, device) -> SACConfig:
        """This config with "auto" resolved for ``device``: precision fp32, ``torch.compile`` on CUDA only."""
        cuda = str(device).startswith("cuda")
        return dataclasses.replace(
            self,
            precision="fp32" if self.precision == "auto" else self.precision,
            compile=cuda if self.compile == "auto" else self.compile,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SACConfig:
        return cls(**_checked_fields(cls, d, "SACConfig"))

    @classmethod
    def preset(cls, name: str, **overrides) -> SACConfig:
        """A preset of :data:`PRESETS` with some fields changed: ``SACConfig.preset("corl", bc_steps=1000)``."""
        if name not in PRESETS:
            raise ValueError(f"unknown SAC preset {name!r}: choose one of {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(_checked_fields(cls, overrides, "SACConfig"))
        return cls(**values)


def _checked_fields(cls, d: dict, what: str) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in d if k not in names]
    if unknown:
        hints = [
            f"{k!r} (did you mean {difflib.get_close_matches(k, names, n=1)[0]!r}?)"
            if difflib.get_close_matches(k, names, n=1)
            else repr(k)
            for k in unknown
        ]
        raise ValueError(f"{what} has no field {', '.join(hints)}; its fields are {sorted(names)}")
    return dict(d)


#: Named settings (docs/paper.md, 'The offline RL base'): the authors' KFC code, the official CQL script, CORL's CQL,
#: and plain online SAC (for behaviour policies). CORL's orthogonal init and state normalisation are not
#: reproduced (our networks keep Xavier init; no normalisation, as in the KFC code).
PRESETS: dict[str, dict] = {
    "kfc-code": {},
    "cql-paper": dict(
        hidden=(256, 256, 256),
        policy_lr=1e-4,
        q_lr=3e-4,
        alpha=1.0,
        auto_alpha=True,
        alpha_lr=1e-4,
        backup_entropy=False,
        cql_weight=1.0,
        lagrange=True,
        lagrange_threshold=5.0,
        bc_steps=40_000,
    ),
    "corl": dict(
        hidden=(256, 256, 256),
        policy_lr=3e-5,
        q_lr=3e-4,
        alpha=1.0,
        auto_alpha=True,
        alpha_lr=3e-5,
        backup_entropy=False,
        cql_weight=10.0,
        lagrange=False,
        bc_steps=0,
    ),
    "online-sac": dict(
        policy_lr=3e-4,
        q_lr=3e-4,
        alpha=1.0,
        auto_alpha=True,
        alpha_lr=3e-4,
        backup_entropy=True,
        cql_weight=0.0,
        lagrange=False,
        bc_steps=0,
        online=True,
    ),
}
