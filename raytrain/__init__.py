"""raytrain: train and tune YOLO object detectors on Ray. Nothing runs on import; the API loads lazily."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public API name -> module that defines it; imported on first use so `import raytrain` stays instant.
_API = {
    "Config": "raytrain.config",
    "make_config": "raytrain.config",
    "build_model": "raytrain.models",
    "load_model": "raytrain.models",
    "fit": "raytrain.train.fit",
    "tune": "raytrain.tuning.api",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'raytrain' has no attribute {name!r}")


__all__ = ["__version__", *_API]
