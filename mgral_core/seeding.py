"""The one seed recipe: every random stream of a cycle comes from (base seed, cycle, purpose).

The selection stream, handed to every strategy as its `rng`, is `default_rng([seed, cycle])`
(the key it has always had, so selections made before this recipe repeat exactly); every
other purpose appends its index in PURPOSES: `default_rng([seed, cycle, index])`. Streams of
different purposes or cycles are independent; the same inputs always give the same stream.
"""

from __future__ import annotations

import numpy as np

# The purposes that draw their own stream. Append new ones at the end: an index never changes.
PURPOSES = ("select", "detector", "lookup_batches", "estimator", "pseudo_labels", "detector_repeat",
            "class_gain_groups", "coverage")


def rng_for(seed: int, cycle: int, purpose: str) -> np.random.Generator:
    """The random stream of `purpose` in `cycle` under base `seed`.

    Raises:
        ValueError: for a purpose not in PURPOSES, or a negative seed or cycle.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"unknown random-stream purpose {purpose!r}; known: {', '.join(PURPOSES)}")
    if seed < 0 or cycle < 0:
        raise ValueError(f"seed and cycle must be >= 0, got seed={seed}, cycle={cycle}")
    index = PURPOSES.index(purpose)
    return np.random.default_rng([seed, cycle] if index == 0 else [seed, cycle, index])


def seed_for(seed: int, cycle: int, purpose: str) -> int:
    """An integer seed (0 <= s < 2**31) for a library that takes one (Ultralytics, torch), from `rng_for`."""
    return int(rng_for(seed, cycle, purpose).integers(0, 2**31 - 1))


def repeat_seed(seed: int, cycle: int, repeat: int) -> int:
    """The training seed of repeat `repeat` (1, 2, ...) of a cycle's detector training: the repeat-th draw of
    the cycle's `detector_repeat` stream, so repeat r's seed is the same whether or not R grows later."""
    if repeat < 1:
        raise ValueError(f"repeat {repeat}: repeats are numbered from 1 (0 is the cycle's own training)")
    return int(rng_for(seed, cycle, "detector_repeat").integers(0, 2**31 - 1, size=repeat)[-1])
