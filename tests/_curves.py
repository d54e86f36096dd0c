"""Range-test-like curves for the property tests of the rules."""

from __future__ import annotations

from hypothesis import strategies as st
import numpy as np


def make_curve(
    seed: int, n: int, noise: float, centre: float, blowup: bool = True, spikes: int = 0
) -> tuple[list[float], list[float]]:
    """Flat, a sigmoid descent around 10**centre, a blow-up, noise, and ``spikes`` outliers."""
    rng = np.random.default_rng(seed)
    lrs = np.geomspace(1e-7, 10, n)
    x = np.log10(lrs)
    loss = 2.3 - 1.5 / (1 + np.exp(-(x - centre) * 2.5))
    if blowup:
        loss = loss + np.exp(3 * (x - centre - 2.5))
    loss = loss + rng.normal(0, noise, n)
    for i in rng.integers(0, n, spikes):
        loss[i] += 3.0
    return lrs.tolist(), loss.tolist()


def curves(spikes: bool = True) -> st.SearchStrategy[tuple[list[float], list[float]]]:
    """Hypothesis curves of 5-160 steps, any noise level, with or without outliers."""
    return st.builds(
        make_curve,
        seed=st.integers(0, 2**31 - 1),
        n=st.integers(5, 160),
        noise=st.sampled_from([0.0, 0.005, 0.05, 0.3]),
        centre=st.floats(-6, -0.5),
        blowup=st.booleans(),
        spikes=st.integers(0, 3) if spikes else st.just(0),
    )
