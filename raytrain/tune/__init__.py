"""``raytrain tune``: hyperparameter search over ``raytrain fit`` runs with Ray Tune, Optuna and ASHA.

``space.py`` reads and validates the search-space file, ``run.py`` runs the experiment, ``results.py`` writes and
reads back its outputs. Nothing is imported until used: ``import raytrain.tune`` does not import Ray.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raytrain.tune.run import TuneResult


def tune(space: str | Path | dict[str, Any] = "search_spaces/quickstart.yaml", **overrides: Any) -> TuneResult:
    """Run a hyperparameter search; see :func:`raytrain.tune.run.tune`."""
    from raytrain.tune.run import tune as run_tune

    return run_tune(space, **overrides)


__all__ = ["tune"]
