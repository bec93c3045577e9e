"""``raytrain tune``: hyperparameter search over ``raytrain fit`` runs with Ray Tune, Optuna and ASHA.

``space.py`` reads and validates the search-space file, ``run.py`` runs the experiment, ``results.py`` writes and
reads back its outputs. Nothing is imported until used: ``import raytrain.tune`` does not import Ray.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raytrain.tune.run import TuneResult


def tune(space: str | Path | dict[str, Any], *, start_ray: bool = False, **overrides: Any) -> TuneResult:
    """Search training hyperparameters; see :func:`raytrain.tune.run.tune`.

    Example:
        >>> import ray, raytrain
        >>> ray.init(include_dashboard=True)
        >>> result = raytrain.tune("search_spaces/quickstart.yaml", num_samples=4)
        >>> result.best_metric, result.best_config.lr0, result.experiment_dir
    """
    from raytrain.tune.run import tune as run_tune

    return run_tune(space, start_ray=start_ray, **overrides)


class _CallableModule(types.ModuleType):
    """``raytrain.tune`` names both this package and the function: once the package is imported, Python binds the
    attribute ``raytrain.tune`` to the package, so the package forwards calls to :func:`tune`."""

    def __call__(self, *args: Any, **kwargs: Any) -> TuneResult:
        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["tune"]
