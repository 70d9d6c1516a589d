"""Checks for notebook 03 (symmetries of dynamics)."""

import numpy as np

from kfc_lite.exercises import Wrong, exercise, expect_close, multiple_choice


def _rotation(theta):
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def _commutator(sigma, K):
    return np.linalg.norm(sigma @ K - K @ sigma) / max(np.linalg.norm(sigma) * np.linalg.norm(K), 1e-300)


def _reference_symmetry(K, eps):
    lam, U = np.linalg.eig(K)
    return (U @ np.diag(np.asarray(eps, dtype=complex)) @ np.linalg.inv(U)).real


def _cases():
    rng = np.random.default_rng(3)
    cases = [(np.diag([0.9, 0.5, -0.2]), np.array([0.1, -0.3, 0.2])), (0.95 * _rotation(0.4), np.array([0.2, 0.2]))]
    for n in (4, 6):
        K = rng.standard_normal((n, n)) / np.sqrt(n)
        cases.append((K, rng.standard_normal(n)))
    return cases


@exercise("03", "commuting_symmetry")
def check_commuting_symmetry(fn):
    """``fn(K, eps)`` must return the real matrix Re(U diag(eps) U^-1) for NumPy ``K`` (n, n), ``eps`` (n,)."""
    for K, eps in _cases():
        got = fn(K.copy(), eps.copy())
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        got = np.asarray(got)
        if np.iscomplexobj(got):
            raise Wrong(
                f"for a {K.shape[0]}x{K.shape[0]} K your matrix is complex ({got.dtype})",
                hint="U and U^-1 are complex when K has complex eigenvalues; keep the real part with .real",
            )
        if got.shape != K.shape:
            raise Wrong(f"the shape is {got.shape}, expected {K.shape}", hint="sigma is an n x n matrix, like K")
        err = _commutator(got, K)
        if not np.isfinite(err) or err > 1e-8:
            hint = "build U diag(eps) U^-1 with U the eigenvector matrix (columns) and U^-1 = np.linalg.inv(U)"
            if np.allclose(got, (np.linalg.eig(K)[1] @ np.diag(eps) @ np.linalg.eig(K)[1].T).real, atol=1e-8):
                hint = "U.T is not U^-1 unless U is orthogonal: use np.linalg.inv(U)"
            raise Wrong(
                f"your sigma does not commute with K: ||sigma K - K sigma|| / (||sigma|| ||K||) = {err:.2e}", hint=hint
            )
        expect_close(
            f"sigma for K of size {K.shape[0]}",
            got,
            _reference_symmetry(K, eps),
            rtol=1e-7,
            atol=1e-9,
            hint="eps[i] belongs to the eigenvalue lam[i] that np.linalg.eig returns in position i",
        )
    return (
        "all cases commute with K to round-off, complex eigenvalues included: the real part of "
        "U diag(eps) U^-1 is still diagonal in the eigenbasis (each conjugate pair gets the average of its two eps)."
    )


@exercise("03", "rotation_symmetry")
def check_rotation_symmetry(fn):
    """``fn(a, b)`` must return the real 2x2 matrix U diag(a + ib, a - ib) U^-1 for a rotation K = R(theta),
    where the first eigenvector belongs to exp(+i theta): a I + b J, J = [[0, -1], [1, 0]]."""
    for a, b in [(1.0, 0.0), (0.0, 1.0), (0.3, -0.7), (-2.0, 0.5)]:
        got = fn(a, b)
        if got is None:
            raise Wrong("your function returned None", hint="did you forget `return`?")
        got = np.asarray(got)
        if got.shape != (2, 2):
            raise Wrong(f"rotation_symmetry({a}, {b}) has shape {got.shape}, expected (2, 2)")
        if np.iscomplexobj(got):
            if np.abs(got.imag).max() > 1e-9:
                raise Wrong(
                    "your matrix has an imaginary part",
                    got=got,
                    hint="with a + ib on v and a - ib on conj(v), U diag U^-1 is real: check the pairing",
                )
            got = got.real
        for theta in (0.3, 1.1, 2.5):
            K = _rotation(theta)
            if _commutator(got, K) > 1e-9:
                raise Wrong(
                    f"for a = {a}, b = {b} your matrix does not commute with the rotation by {theta} rad",
                    got=got,
                    hint="matrices that commute with every rotation are combinations of I and J = [[0, -1], [1, 0]]",
                )
        expected = a * np.eye(2) + b * np.array([[0.0, -1.0], [1.0, 0.0]])
        if np.allclose(got, expected.T) and b != 0:
            raise Wrong(
                f"for a = {a}, b = {b} you have the sign of b flipped (that matrix commutes too, but it puts "
                "a + ib on the eigenvalue exp(-i theta))",
                expected=expected,
                got=got,
                hint="R(theta) [1, -i] = exp(+i theta) [1, -i]: the first eigenvector is [1, -i] / sqrt(2)",
            )
        expect_close(
            f"rotation_symmetry({a}, {b})",
            got,
            expected,
            rtol=1e-8,
            atol=1e-10,
            hint="compute U diag(a + ib, a - ib) U^-1 with U = [[1, 1], [-i, i]] / sqrt(2)",
        )
    return (
        "the real symmetries of a rotation are a I + b J: a scaling and a rotation. KFC++'s real eps reach "
        "only the scaling (b = 0); the rotation needs an imaginary parameter."
    )


def _linear_encoder_case():
    rng = np.random.default_rng(7)
    n = 3
    P = np.eye(n) + 0.4 * rng.standard_normal((n, n))
    P_inv = np.linalg.inv(P)
    A = _rotation(0.3)
    A = np.block([[0.97 * A, np.zeros((2, 1))], [np.zeros((1, 2)), np.array([[0.8]])]])
    K = P @ A @ P_inv
    encode = lambda s: np.asarray(s) @ P.T
    decode = lambda z: np.asarray(z) @ P_inv.T
    s = rng.standard_normal((5, n))
    s_next = s @ A.T
    sigma = _reference_symmetry(K, np.array([0.1, 0.1, -0.2]))
    return encode, decode, K, A, sigma, s, s_next


@exercise("03", "shift_transition")
def check_shift_transition(fn):
    """``fn(encode, decode, sigma, s, s_next)`` must return ``(D((I + sigma) E(s)), D((I + sigma) E(s')))``."""
    encode, decode, K, A, sigma, s, s_next = _linear_encoder_case()
    out = fn(encode, decode, sigma.copy(), s.copy(), s_next.copy())
    if out is None:
        raise Wrong("your function returned None", hint="return the pair (s_tilde, s_next_tilde)")
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise Wrong(f"expected a pair (s_tilde, s_next_tilde), got {type(out).__name__}")
    st, snt = (np.asarray(x) for x in out)
    n = K.shape[0]
    z, zn = encode(s), encode(s_next)
    if st.shape != s.shape or snt.shape != s_next.shape:
        raise Wrong(f"shapes {st.shape}, {snt.shape}; expected {s.shape} twice (a batch of states, one per row)")
    if np.allclose(st, s + s @ sigma.T, atol=1e-9):
        raise Wrong(
            "you applied sigma to the state itself; sigma acts in the latent space",
            hint="encode first, apply (I + sigma), then decode",
        )
    if np.allclose(st, decode(z @ sigma.T), atol=1e-9):
        raise Wrong("you applied sigma instead of I + sigma", hint="the step is z + sigma z, not sigma z")
    expect_close(
        "s_tilde",
        st,
        decode(z @ (np.eye(n) + sigma).T),
        rtol=1e-8,
        atol=1e-10,
        hint="s_tilde = decode(encode(s) @ (I + sigma).T): rows are states, so multiply by the transpose",
    )
    expect_close(
        "s_next_tilde",
        snt,
        decode(zn @ (np.eye(n) + sigma).T),
        rtol=1e-8,
        atol=1e-10,
        hint="use the same sigma for s and s' (the same draw), else the pair is no longer a transition",
    )
    residual = np.abs(snt - st @ A.T).max()
    return (
        f"the moved pair is still a transition of the system: max |A s~ - s~'| = {residual:.1e}, "
        "because I + sigma commutes with K."
    )


_commutation_scaling = multiple_choice(
    "03",
    "commutation_scaling",
    "You multiply the vector ε by 10. What happens to the relative commutation error ||σK − Kσ|| / (||σ|| ||K||)?",
    {
        "a": "it grows 10 times",
        "b": "it grows 100 times (it is second order in ε)",
        "c": "it does not change: it stays at round-off level whatever the size of eps",
    },
    "c",
    {
        "a": "σ = U diag(ε) U⁻¹ is linear in ε, so numerator and denominator both grow 10 times; "
        "the ratio is unchanged.",
        "b": "commuting is exact, not a first-order statement: σ commutes with K for every ε, and so does I + σ. "
        "What is first order is I + εG as the start of the series of exp(εG), which plays no role in the commutation.",
        "c": "σ is linear in ε and commutes with K for every ε; the relative error measures only its direction, "
        "and it is set by round-off (cond(U) times machine epsilon).",
    },
)

_model_error_scaling = multiple_choice(
    "03",
    "model_error_scaling",
    "In the plot, why does the true-dynamics error of a moved pendulum transition grow with the shift?",
    {
        "a": "because σ stops commuting with K(a) when ε is large",
        "b": "because the model is only approximate: E(F(s, a)) ≈ K(a) E(s) holds near the data, and (I + σ)E(s) "
        "leaves the set of latents the encoder produces, where the decoder was never trained",
        "c": "because the reward is not moved with the state",
    },
    "b",
    {
        "a": "the commutation error printed next to the plot stays at round-off level for every ε.",
        "b": "a symmetry of the model is a symmetry of the system only as far as the model is right; far from the "
        "data it is not, so KFC++ keeps ε small (εᵢ ~ N(0, (3e-3 ρ)²), ρ = shift_sigma).",
        "c": "the error here is about states only: is s~' where the pendulum goes from s~? The reward plays no role.",
    },
)


check_commutation_scaling = _commutation_scaling
check_model_error_scaling = _model_error_scaling
