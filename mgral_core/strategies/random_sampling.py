"""Random sampling: the reference every other strategy has to beat."""

from __future__ import annotations

import numpy as np

from mgral_core.strategies.base import PoolView
from mgral_core.strategies.ranking import check_budget


def random_sampling(pool: PoolView, k: int, rng: np.random.Generator) -> list[str]:
    """k unlabeled ids drawn uniformly without replacement with `rng`; looks at nothing else."""
    check_budget(pool, k)
    rows = rng.choice(len(pool.unlabeled_ids), size=k, replace=False)  # (k,)
    return [str(pool.unlabeled_ids[i]) for i in rows]
