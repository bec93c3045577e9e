"""``raytrain fit key=value ...``: train one detector (:func:`raytrain.train.fit.fit`), starting a local Ray (or
joining ``address=``/``RAY_ADDRESS``)."""

from __future__ import annotations

import logging
from typing import Any

from raytrain.config import ConfigError, make_config

LOGGER = logging.getLogger("raytrain")


def main(positional: list[str], args: dict[str, Any]) -> int:
    from raytrain import keys
    from raytrain.train.fit import fit

    if positional:
        raise ConfigError(f"raytrain fit takes only key=value arguments, not {positional[0]!r}.")
    result = fit(make_config(args), start_ray=True)
    metrics = result.metrics
    LOGGER.info("mAP50 %.3f  mAP50-95 %.3f  best weights: %s", metrics.get(keys.MAP50, float("nan")),
                metrics.get(keys.MAP50_95, float("nan")), result.best)
    return 0
