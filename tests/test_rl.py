"""Networks, SAC+CQL losses and updates, augmented-state routing, policy files (kfc_lite.rl)."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kfc_lite.rl import networks, sac
from kfc_lite.rl.networks import CriticEnsemble, TanhGaussianActor
from kfc_lite.rl.policy import load_policy, save_policy
from kfc_lite.rl.sac import PRESETS, SACCQL, SACConfig

DS, DA = 5, 2
TINY = dict(hidden=(32, 32), batch_size=64)


def make_batch(B=64, ds=DS, da=DA, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        observations=torch.randn(B, ds, generator=g),
        actions=torch.rand(B, da, generator=g) * 2 - 1,
        rewards=torch.randn(B, generator=g),
        next_observations=torch.randn(B, ds, generator=g),
        terminals=torch.rand(B, generator=g) < 0.2,
    )


# -- networks -----------------------------------------------------------------------------------------------
def critic_by_loop(critic: CriticEnsemble, s, a):
    """Each critic as a plain MLP on [s, a], one at a time: what the batched call must equal."""
    outs = []
    for j in range(critic.n_critics):
        h = torch.cat([s, a], -1) @ torch.cat([critic.w_state[j], critic.w_action[j]], 0) + critic.b_in[j, 0]
        h = F.relu(h)
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases, strict=False)):
            h = h @ w[j] + b[j, 0]
            if i < len(critic.weights) - 1:
                h = F.relu(h)
        outs.append(h.squeeze(-1))
    return torch.stack(outs)


def test_critic_ensemble_one_call_equals_a_loop_over_critics():
    torch.manual_seed(0)
    critic = CriticEnsemble(DS, DA, hidden=(16, 8, 4), n_critics=3)
    with torch.no_grad():  # non-zero biases, so a broadcasting mistake would show
        for b in (critic.b_in, *critic.biases):
            b.normal_()
    s, a, many = torch.randn(7, DS), torch.randn(7, DA), torch.randn(7, 4, DA)
    torch.testing.assert_close(critic(s, a), critic_by_loop(critic, s, a))
    q_many = critic(s, many)
    assert q_many.shape == (3, 7, 4)
    expect = torch.stack([critic_by_loop(critic, s, many[:, k]) for k in range(4)], -1)
    torch.testing.assert_close(q_many, expect)
    s_many = torch.randn(7, 4, DS)
    expect = torch.stack([critic_by_loop(critic, s_many[:, k], many[:, k]) for k in range(4)], -1)
    torch.testing.assert_close(critic(s_many, many), expect)
    with pytest.raises(ValueError, match="actions"):
        critic(s, torch.randn(7, DA + 1))


def test_critic_init_is_xavier_per_critic():
    critic = CriticEnsemble(17, 6, hidden=(256, 256), n_critics=2)
    bound = math.sqrt(6 / (23 + 256))
    assert critic.w_state.abs().max() <= bound and critic.w_state.abs().max() > 0.9 * bound
    assert float(critic.biases[0].detach().abs().max()) == 0.0


def test_actor_log_prob_matches_torch_tanh_normal():
    torch.manual_seed(1)
    actor = TanhGaussianActor(DS, DA, hidden=(16, 16))
    s = torch.randn(50, DS)
    a, logp = actor.sample(s)
    mean, log_std = actor(s)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform(cache_size=1)]
    )
    torch.testing.assert_close(logp, dist.log_prob(a).sum(-1), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(actor.log_prob(s, a), logp, atol=1e-3, rtol=1e-4)
    assert (a.abs() < 1).all()
    many, logp_many = actor.sample(s, n=3)
    assert many.shape == (50, 3, DA) and logp_many.shape == (50, 3)
    # reparameterised: the sample's gradient reaches the actor
    many.sum().backward()
    assert actor.mean_head.weight.grad is not None


def test_actor_log_std_clamped_and_boundary_actions_finite():
    actor = TanhGaussianActor(DS, DA, hidden=(8,))
    with torch.no_grad():
        actor.log_std_head.bias.fill_(50.0)
    _, log_std = actor(torch.randn(4, DS))
    assert float(log_std.detach().max()) == networks.LOG_STD_MAX
    lp = actor.log_prob(torch.randn(4, DS), torch.tensor([[1.0, -1.0]] * 4))
    assert torch.isfinite(lp).all()


# -- losses against direct computations -----------------------------------------------------------------------
def test_td_target_and_loss():
    r = torch.tensor([1.0, 2.0])
    d = torch.tensor([0.0, 1.0])
    next_q = torch.tensor([[3.0, 5.0], [4.0, 1.0]])  # (E=2, B=2): min over critics is [3, 1]
    logp = torch.tensor([-1.0, 0.5])
    y = sac.td_target(r, d, next_q, logp, gamma=0.9, alpha=0.2)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (3.0 + 0.2), 2.0]))
    y0 = sac.td_target(r, d, next_q, logp, gamma=0.9, alpha=0.0)
    torch.testing.assert_close(y0, torch.tensor([1.0 + 0.9 * 3.0, 2.0]))
    q = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    # critic 1: ((1-3)^2 + (2-1)^2)/2 = 2.5; critic 2: (9 + 1)/2 = 5
    assert float(sac.td_loss(q, torch.tensor([3.0, 1.0]))) == pytest.approx(7.5)


def test_cql_penalty_is_the_importance_sampled_logsumexp_gap():
    torch.manual_seed(0)
    E, B, K = 2, 3, 4
    q_ood, q_data, log_mu = torch.randn(E, B, K), torch.randn(E, B), torch.randn(B, K)
    for T in (1.0, 0.5):
        expect = torch.zeros(E)
        for j in range(E):
            per_state = [
                T * math.log(sum(math.exp((float(q_ood[j, i, k]) - float(log_mu[i, k])) / T) for k in range(K)))
                for i in range(B)
            ]
            expect[j] = sum(per_state) / B - float(q_data[j].mean())
        torch.testing.assert_close(sac.cql_penalty(q_data, q_ood, log_mu, T), expect)


def test_lagrange_actor_bc_alpha_losses():
    gap = torch.tensor([2.0, 4.0])
    log_ap = torch.tensor(math.log(3.0), requires_grad=True)
    loss = sac.lagrange_loss(log_ap, gap, cql_weight=10.0, threshold=25.0)
    # -(3 * (20 - 25) + 3 * (40 - 25)) / 2 = -15
    assert float(loss.detach()) == pytest.approx(-15.0)
    loss.backward()
    assert float(log_ap.grad) == pytest.approx(-15.0)  # d/dlog a' of -a' * mean(10 gap - 25): the gap is above target
    logp = torch.tensor([-1.0, -3.0])
    q_pi = torch.tensor([[1.0, 4.0], [2.0, 0.0]])
    assert float(sac.actor_loss(logp, q_pi, 0.5)) == pytest.approx(((-0.5 - 1.0) + (-1.5 - 0.0)) / 2)
    assert float(sac.bc_actor_loss(logp, torch.tensor([-2.0, 1.0]), 0.5)) == pytest.approx(
        ((-0.5 + 2) + (-1.5 - 1)) / 2
    )
    log_alpha = torch.tensor(0.0, requires_grad=True)
    la = sac.alpha_loss(log_alpha, logp, target_entropy=-2.0)
    la.backward()
    # gradient -(mean(logp) + target) = -(-2 - 2) = 4 > 0: entropy (2) above target (-2 ... i.e. -logp > 2), alpha falls
    assert float(log_alpha.grad) == pytest.approx(4.0)


def test_polyak_update():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.clone() for p in a.parameters()]
    sac.polyak_update(a, b, 0.1)
    for p0, p, q in zip(before, a.parameters(), b.parameters(), strict=False):
        torch.testing.assert_close(p, 0.9 * p0 + 0.1 * q)


# -- configuration -------------------------------------------------------------------------------------------
def test_config_defaults_are_the_kfc_code():
    c = SACConfig()
    assert (c.hidden, c.policy_lr, c.q_lr, c.gamma, c.tau, c.batch_size) == ((256, 256), 1e-4, 3e-4, 0.99, 5e-3, 256)
    assert (c.alpha, c.auto_alpha, c.backup_entropy) == (0.2, False, True)
    assert (c.lagrange, c.lagrange_threshold, c.cql_weight, c.alpha_prime_lr) == (True, 10.0, 10.0, 3e-4)
    assert (c.cql_n_actions, c.cql_temperature, c.bc_steps) == (10, 1.0, 40_000)
    assert {"kfc-code", "cql-paper", "corl"} <= set(PRESETS)
    corl = SACConfig.preset("corl", bc_steps=5)
    assert corl.hidden == (256, 256, 256) and corl.policy_lr == 3e-5 and not corl.lagrange and corl.bc_steps == 5
    assert SACConfig.from_dict(corl.to_dict()) == corl


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(q_lr=-1e-3), "q_lr"),
        (dict(gamma=1.5), "gamma"),
        (dict(tau=0.0), "tau"),
        (dict(hidden=(256, 0)), "hidden"),
        (dict(precision="fp16"), "precision"),
        (dict(cql_weight=-1), "cql_weight"),
        (dict(batch_size=0), "batch_size"),
        (dict(auto_alpha=True, alpha=0.0), "alpha"),
        (dict(bc_steps=-1), "bc_steps"),
    ],
)
def test_bad_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SACConfig(**kwargs)


def test_unknown_preset_and_field():
    with pytest.raises(ValueError, match="preset"):
        SACConfig.preset("cql")
    with pytest.raises(ValueError, match="did you mean 'q_lr'"):
        SACConfig.preset("corl", qlr=1e-3)


# -- the agent -----------------------------------------------------------------------------------------------
def test_update_returns_floats_and_bc_then_sac_phase():
    torch.manual_seed(0)
    agent = SACCQL(DS, DA, SACConfig(**TINY, bc_steps=2), "cpu")
    b = make_batch()
    m1 = agent.update(b)
    assert m1["bc_phase"] == 1.0 and "q_pi" not in m1
    agent.update(b)
    m3 = agent.update(b)
    assert m3["bc_phase"] == 0.0 and "q_pi" in m3 and m3["step"] == 3
    for key in (
        "critic_loss",
        "td_loss",
        "cql_penalty",
        "cql_weight",
        "actor_loss",
        "alpha",
        "q_data",
        "q_random",
        "q_policy",
        "q_next_policy",
    ):
        assert isinstance(m3[key], float) and math.isfinite(m3[key]), key
    assert m3["cql_weight"] == pytest.approx(10.0, rel=0.01)  # alpha' starts at 1, times min_q_weight 10
    assert agent.update(b, metrics=False) == {}


def test_online_sac_has_no_penalty_and_tunes_alpha():
    torch.manual_seed(0)
    agent = SACCQL(DS, DA, SACConfig.preset("online-sac", hidden=(32, 32)), "cpu")
    b = make_batch()
    for _ in range(5):
        m = agent.update(b)
    assert m["cql_penalty"] == 0.0 and m["cql_weight"] == 0.0 and "q_random" not in m
    assert m["alpha"] != 1.0 and m["bc_phase"] == 0.0


def test_cql_pushes_ood_q_below_dataset_q():
    """A few hundred steps on data whose actions all sit near (0.5, -0.5): with the penalty, Q at the data's actions
    ends well above Q at uniform random actions; without it (same seed) the gap is much smaller."""

    def gap_after(cql_weight):
        torch.manual_seed(0)
        B = 128
        g = torch.Generator().manual_seed(1)
        s = torch.randn(512, DS, generator=g)
        a = (torch.tensor([0.5, -0.5]) + 0.05 * torch.randn(512, DA, generator=g)).clamp(-1, 1)
        r = torch.randn(512, generator=g) * 0.1
        s2 = torch.randn(512, DS, generator=g)
        cfg = SACConfig(
            hidden=(32, 32), batch_size=B, cql_weight=cql_weight, lagrange=False, bc_steps=50, q_lr=1e-3, policy_lr=1e-3
        )
        agent = SACCQL(DS, DA, cfg, "cpu")
        for _ in range(300):
            idx = torch.randint(0, 512, (B,), generator=g)
            agent.update(
                dict(
                    observations=s[idx],
                    actions=a[idx],
                    rewards=r[idx],
                    next_observations=s2[idx],
                    terminals=torch.zeros(B, dtype=torch.bool),
                ),
                metrics=False,
            )
        with torch.no_grad():
            q_data = agent.critic(s, a).mean()
            q_rand = agent.critic(s, torch.rand(512, 16, DA, generator=g) * 2 - 1).mean()
        return float(q_data - q_rand)

    with_cql, without = gap_after(1.0), gap_after(0.0)
    assert with_cql > 1.0, with_cql
    assert with_cql > without + 1.0, (with_cql, without)


def marked(batch):
    """A test double of an augmenter's output: observations + 1000 and next observations + 2000, so every consumer
    shows which it saw."""
    return dict(
        batch, observations=batch["observations"] + 1000.0, next_observations=batch["next_observations"] + 2000.0
    )


class Recorder(torch.nn.Module):
    def __init__(self, module, log, name):
        super().__init__()
        self.module, self.log, self.name = module, log, name

    def forward(self, states, *rest):
        self.log.append((self.name, states.detach().clone(), rest[0].detach().clone() if rest else None))
        return self.module(states, *rest)


def test_augmented_states_go_where_the_authors_code_puts_them():
    torch.manual_seed(0)
    agent = SACCQL(DS, DA, SACConfig(**TINY, bc_steps=0), "cpu")
    log = []
    agent._actor_fn = Recorder(agent.actor, log, "actor")
    agent._critic_fn = Recorder(agent.critic, log, "critic")
    agent._target_fn = Recorder(agent.critic_target, log, "target")
    b = make_batch(B=16)
    s, s2 = b["observations"], b["next_observations"]
    agent.update(b, marked(b))

    def kind(x):
        for name, ref in (("s", s), ("s~", s + 1000), ("s'", s2), ("s~'", s2 + 2000)):
            if x.shape == ref.shape and torch.equal(x, ref):
                return name
        if x.ndim == 3 and x.shape[1] > 1:  # one call for several rows per state: name each column
            return "[" + ", ".join(kind(x[:, j]) for j in range(x.shape[1])) + "]"
        return "other"

    seen = [(name, kind(x)) for name, x, _ in log]
    joined_actions = log[3][2]  # the joined critic call: the dataset's action first, then the 3M sampled ones
    assert torch.equal(joined_actions[:, 0], b["actions"])
    assert not any(torch.equal(joined_actions[:, j], b["actions"]) for j in range(1, joined_actions.shape[1]))
    assert seen == [
        ("actor", "s"),  # the actor's distribution at clean s (CQL samples and actor loss)
        ("actor", "s'"),  # a' ~ pi(.|s') at the CLEAN next state
        ("target", "s~'"),  # target critic at the AUGMENTED next state
        # one call: the TD term and the CQL data term Q(s~, a), then the CQL log-sum-exp's 3M
        # sampled actions at the clean s
        ("critic", "[" + ", ".join(["s~"] + ["s"] * 3 * agent.config.cql_n_actions) + "]"),
        ("critic", "s"),
    ], seen  # actor loss at clean s


def test_bf16_losses_close_to_fp32():
    b = make_batch(B=128)
    out = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        agent = SACCQL(DS, DA, SACConfig(hidden=(64, 64), bc_steps=0, precision=prec), "cpu")
        for _ in range(3):
            m = agent.update(b)
        out[prec] = m
    for key in ("td_loss", "cql_gap", "q_data", "actor_loss", "q_random"):
        assert out["bf16"][key] == pytest.approx(out["fp32"][key], rel=0.05, abs=0.05), key


def test_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    cfg = SACConfig(**TINY, bc_steps=1, auto_alpha=True, alpha=1.0)
    a1 = SACCQL(DS, DA, cfg, "cpu")
    b = make_batch()
    for _ in range(3):
        a1.update(b)
    a2 = SACCQL(DS, DA, cfg, "cpu")
    a2.load_state_dict(copy.deepcopy(a1.state_dict()))
    rng = torch.get_rng_state()
    m1 = a1.update(b)
    torch.set_rng_state(rng)
    m2 = a2.update(b)
    assert m1 == m2
    for p, q in zip(a1.critic_target.parameters(), a2.critic_target.parameters(), strict=False):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="state_dim"):
        SACCQL(DS + 1, DA, cfg, "cpu").load_state_dict(a1.state_dict())


def test_batch_errors_name_the_problem():
    agent = SACCQL(DS, DA, SACConfig(**TINY), "cpu")
    b = make_batch()
    with pytest.raises(KeyError, match="rewards"):
        agent.update({k: v for k, v in b.items() if k != "rewards"})
    with pytest.raises(ValueError, match="observations"):
        agent.update(dict(b, observations=torch.randn(64, DS + 1)))
    with pytest.raises(TypeError, match="augmenter"):
        agent.update(b, b["observations"])
    with pytest.raises(ValueError, match="this very batch"):
        agent.update(b, dict(b, observations=b["observations"][:10]))


def test_act_shapes():
    agent = SACCQL(DS, DA, SACConfig(**TINY), "cpu")
    assert agent.act(np.zeros(DS)).shape == (DA,)
    assert agent.act(np.zeros((4, DS)), deterministic=False).shape == (4, DA)


# -- policy files ----------------------------------------------------------------------------------------------
def test_policy_round_trip(tmp_path):
    torch.manual_seed(0)
    agent = SACCQL(DS, DA, SACConfig(**TINY), "cpu")
    path = save_policy(agent, tmp_path / "p" / "policy.pt", meta={"method": "cql", "step": 3})
    pol = load_policy(path, state_dim=DS, action_dim=DA)
    obs = np.random.default_rng(0).normal(size=(6, DS)).astype(np.float32)
    np.testing.assert_array_equal(pol.act(obs), agent.act(obs))
    np.testing.assert_array_equal(pol.act(obs[0]), agent.act(obs[0]))
    a, logp = pol.act_with_log_prob(obs)
    assert a.shape == (6, DA) and logp.shape == (6,) and np.isfinite(logp).all()
    assert pol.meta == {"method": "cql", "step": 3}
    assert load_policy(tmp_path / "p").act(obs).shape == (6, DA)  # a run folder works too
    assert not list((tmp_path / "p").glob("*.tmp"))
    with pytest.raises(ValueError, match="state_dim=5"):
        load_policy(path, state_dim=11)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        pol.act(np.zeros(3))
    with pytest.raises(FileNotFoundError, match="kfc-lite train"):
        load_policy(tmp_path / "nothing.pt")


@pytest.mark.parametrize("mode", ["epoch", "uniform"])
def test_transition_sampler_state_round_trip(mode):
    from kfc_lite.rl.replay import TransitionSampler

    data = {k: v.numpy() for k, v in make_batch(B=50).items()}
    s1 = TransitionSampler(data, 8, "cpu", seed=3, mode=mode)
    s1.sample()
    state = copy.deepcopy(s1.state_dict())
    torch.manual_seed(0)
    b1 = [s1.sample() for _ in range(8)]  # crosses the end of a pass in epoch mode
    s2 = TransitionSampler(data, 8, "cpu", seed=99, mode=mode)
    s2.load_state_dict(state)
    torch.manual_seed(1)  # the global RNG does not matter
    b2 = [s2.sample() for _ in range(8)]
    for x, y in zip(b1, b2, strict=False):
        for k in x:
            assert torch.equal(x[k], y[k])
    assert b1[0]["terminals"].dtype == torch.bool and b1[0]["observations"].dtype == torch.float32


def test_epoch_sampling_visits_every_row_once_per_pass():
    from kfc_lite.rl.replay import TransitionSampler

    data = {k: v.numpy() for k, v in make_batch(B=48).items()}
    data["rewards"] = np.arange(48, dtype=np.float32)
    s = TransitionSampler(data, 8, "cpu", seed=0)
    seen = torch.cat([s.sample()["rewards"] for _ in range(6)])
    assert sorted(seen.tolist()) == list(range(48))
    with pytest.raises(KeyError, match="rewards"):
        TransitionSampler({k: v for k, v in data.items() if k != "rewards"}, 8)
    with pytest.raises(ValueError, match="mode='uniform'"):
        TransitionSampler(data, 64, "cpu")


@pytest.mark.parametrize("threshold, direction", [(-100.0, 1), (1e4, -1)])
def test_lagrange_multiplier_moves_towards_the_threshold(threshold, direction):
    """alpha' grows while the weighted gap exceeds the threshold, and shrinks below it."""
    torch.manual_seed(0)
    agent = SACCQL(DS, DA, SACConfig(**TINY, bc_steps=0, lagrange_threshold=threshold), "cpu")
    b = make_batch()
    weights = [agent.update(b)["cql_weight"] for _ in range(5)]
    assert all(direction * (w2 - w1) > 0 for w1, w2 in zip(weights, weights[1:], strict=False)), weights
    fixed = SACCQL(DS, DA, SACConfig(**TINY, bc_steps=0, lagrange=False, cql_weight=3.0), "cpu")
    assert {fixed.update(b)["cql_weight"] for _ in range(3)} == {3.0}
