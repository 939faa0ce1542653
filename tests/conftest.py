"""Shared test fixtures and hypothesis strategies."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

settings.register_profile(
    "default", deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow]
)


def boxes_strategy(
    min_value: float = -1e3,
    max_value: float = 1e3,
    min_size: float = 0.0,
    max_size: float = 1e3,
    inverted: bool = False,
) -> st.SearchStrategy[tuple[float, float, float, float]]:
    """(x1, y1, x2, y2) tuples; with ``inverted`` the size may be negative."""
    coord = st.floats(min_value, max_value, allow_nan=False, allow_infinity=False)
    size = st.floats(min_size, max_size, allow_nan=False, allow_infinity=False)
    if inverted:
        size = st.one_of(size, size.map(lambda s: -s))
    return st.tuples(coord, coord, size, size).map(lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


def box_pairs(n_min: int = 1, n_max: int = 16, **kwargs: float | bool):
    """Pairs of (pred, target) float64 tensors of shape (n, 4)."""
    pair = st.tuples(boxes_strategy(**kwargs), boxes_strategy(**kwargs))
    return st.lists(pair, min_size=n_min, max_size=n_max).map(
        lambda ps: (
            torch.tensor([p for p, _ in ps], dtype=torch.float64),
            torch.tensor([t for _, t in ps], dtype=torch.float64),
        )
    )


def random_boxes(n: int, generator: torch.Generator, scale: float = 10.0, dtype=torch.float64):
    """n valid boxes with corners in [0, scale) and sizes in [0.1, scale / 2)."""
    xy = torch.rand(n, 2, generator=generator, dtype=dtype) * scale
    wh = torch.rand(n, 2, generator=generator, dtype=dtype) * (scale / 2 - 0.1) + 0.1
    return torch.cat([xy, xy + wh], dim=-1)


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


settings.register_profile(
    "thorough", deadline=None, max_examples=2000, suppress_health_check=[HealthCheck.too_slow]
)
# `make mutate` runs each mutant against the unit tests: the same examples every time (so a
# mutant's verdict does not depend on the draw) and fewer of them (thousands of runs).
settings.register_profile(
    "mutate",
    deadline=None,
    max_examples=12,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
