"""Ranking: z-normalised advantages, pairwise / Pareto preferences, full orderings (hand-computed)."""

import numpy as np
import pytest

from sim2real.errors import Sim2RealError
from sim2real.feedback.ranking import (
    advantages,
    combined_total,
    full_ordering,
    pair_preferences_from_groups,
    pairwise_preferences,
    pareto_preferences,
)


def test_advantages_hand_computed():
    a = advantages(np.array([1.0, 2.0, 3.0]), eps=0.0)
    # mean 2, population variance 2/3
    assert np.allclose(a, np.array([-1, 0, 1]) / np.sqrt(2 / 3))
    assert np.allclose(advantages(np.array([5.0, 5.0])), 0)  # constant batch: eps keeps it finite
    g = advantages(np.array([[1.0, 3.0], [10.0, 30.0]]), eps=0.0, axis=1)
    assert np.allclose(g, [[-1, 1], [-1, 1]])


def test_combined_total_scale_free_and_alpha():
    struct = np.array([0.1, 0.2, 0.3])
    sem = np.array([3.0, 2.0, 1.0])
    t = combined_total(struct, sem, alpha=1.0)
    assert np.allclose(t, 0, atol=1e-6)  # perfectly opposed scores cancel at α = 1
    t2 = combined_total(struct * 1000, sem, alpha=2.0)  # rescaling a score does not matter
    assert np.argmin(t2) == 2
    with pytest.raises(Sim2RealError, match="shapes differ"):
        combined_total(struct, sem[:2])


def test_pairwise_preferences_with_ties():
    a = np.array([0.1, 0.5, 0.3, 0.3])
    b = np.array([0.2, 0.4, 0.3, 0.3 + 1e-9])
    assert pairwise_preferences(a, b).tolist() == [1, -1, 0, 0]
    with pytest.raises(Sim2RealError, match="NaN"):
        pairwise_preferences(np.array([np.nan]), np.array([0.0]))


def test_pareto_preferences():
    sa = np.array([0.1, 0.3, 0.1, 0.2, 0.2])
    ma = np.array([0.1, 0.3, 0.5, 0.2, 0.2])
    sb = np.array([0.2, 0.1, 0.3, 0.2, 0.3])
    mb = np.array([0.2, 0.1, 0.1, 0.2, 0.2])
    # a dominates; b dominates; trade-off; exact tie; a better on struct, tie on sem
    assert pareto_preferences(sa, ma, sb, mb).tolist() == [1, -1, 0, 0, 1]


def test_full_ordering_and_group_pairs():
    totals = np.array([[0.3, -1.0, 2.0, 0.0], [1.0, 1.0, 0.5, 2.0]])
    order = full_ordering(totals)
    assert order.tolist() == [[1, 3, 0, 2], [2, 0, 1, 3]]  # ties keep sample order (stable)
    prefs = pair_preferences_from_groups(totals)
    assert prefs.shape == (2, 4, 4)
    assert prefs[0, 1, 0] == 1 and prefs[0, 0, 1] == -1 and prefs[1, 0, 1] == 0
    assert np.all(prefs == -prefs.transpose(0, 2, 1))
    with pytest.raises(Sim2RealError, match="at least 2"):
        full_ordering(np.array([[1.0]]))
