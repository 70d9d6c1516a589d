"""Checks for notebook 00 (the warm-up exercise)."""

import numpy as np

from kfc_lite.exercises import Wrong, exercise, expect_close


@exercise("00", "eigenvalues_2x2")
def check_eigenvalues_2x2(fn):
    cases = [
        np.array([[2.0, 0.0], [0.0, -1.0]]),
        np.array([[0.0, -1.0], [1.0, 0.0]]),
        np.array([[1.0, 2.0], [3.0, 4.0]]),
    ]
    for A in cases:
        got = np.asarray(fn(A))
        if got.shape != (2,):
            raise Wrong(
                f"for A = {A.tolist()} you returned shape {got.shape}",
                expected="an array of two eigenvalues",
                hint="return np.array([lambda1, lambda2])",
            )
        expected = np.linalg.eigvals(A)
        key = lambda z: (round(z.real, 8), round(z.imag, 8))
        expect_close(
            f"eigenvalues of {A.tolist()}",
            np.array(sorted(got.astype(complex), key=key)),
            np.array(sorted(expected.astype(complex), key=key)),
            rtol=1e-6,
            atol=1e-8,
            hint="the eigenvalues solve λ² − tr(A) λ + det(A) = 0; a rotation has complex ones",
        )
