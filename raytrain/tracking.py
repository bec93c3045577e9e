"""Weights & Biases on the rank-0 training worker: lazy import, never an interactive prompt, no key in any file.

The mode is decided on the driver (:func:`resolve_wandb_mode`) and re-checked on the worker: ``online`` needs
credentials (``WANDB_API_KEY`` or an ``api.wandb.ai`` entry in ``~/.netrc``) *where the worker runs*; without them
the worker falls back to ``offline`` with a warning (upload later with ``wandb sync``). The API key itself is never
copied into the trainer config, the runtime environment, ``args.yaml`` or a checkpoint: on a cluster, give each node
its own credentials.
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOGGER = logging.getLogger("raytrain")
WANDB_HOST = "api.wandb.ai"


def has_wandb_credentials(environ: Mapping[str, str] | None = None, netrc_file: str | Path | None = None) -> bool:
    """True when W&B could log in without a prompt: ``WANDB_API_KEY`` is set or ``~/.netrc`` has api.wandb.ai."""
    environ = os.environ if environ is None else environ
    if environ.get("WANDB_API_KEY"):
        return True
    path = Path(netrc_file) if netrc_file else Path(environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(path)).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str, environ: Mapping[str, str] | None = None,
                       netrc_file: str | Path | None = None) -> str:
    """The W&B mode to use: the ``wandb_mode`` argument, else ``WANDB_MODE``, else online with credentials.

    ``wandb_mode=''`` (the default) means: ``WANDB_MODE`` from the environment when set, else ``online`` when
    credentials exist and ``offline`` otherwise. An explicit ``online`` without credentials becomes ``offline``
    (with a warning) rather than a login prompt.
    """
    environ = os.environ if environ is None else environ
    mode = mode or environ.get("WANDB_MODE", "")
    if mode in ("disabled", "offline"):
        return mode
    if mode == "dryrun":
        return "offline"
    online = has_wandb_credentials(environ, netrc_file)
    if mode == "online" and not online:
        LOGGER.warning("wandb_mode=online but no W&B credentials (WANDB_API_KEY or ~/.netrc) were found here: "
                       "logging offline; upload later with 'wandb sync'.")
    return "online" if online else "offline"


class WandbRun:
    """A W&B run opened on rank 0, or a no-op when W&B is disabled.

    Args:
        mode: online, offline or disabled (from :func:`resolve_wandb_mode`).
        project: W&B project.
        name: run name (the run folder's name, or the tune trial's name).
        save_dir: the run folder; W&B writes its files under ``save_dir/wandb``.
        config: the resolved config (plain data; holds no secrets).
        entity: W&B entity, or None.
        group: group (the tune experiment), or None.
        run_id: a stable id so a resumed or restarted run continues the same W&B run.
    """

    def __init__(self, *, mode: str, project: str, name: str, save_dir: Path, config: dict[str, Any],
                 entity: str | None = None, group: str | None = None, run_id: str | None = None) -> None:
        self.run = None
        if mode == "disabled":
            return
        mode = resolve_wandb_mode(mode)  # re-check on this machine: credentials live per node
        try:
            import wandb
        except ImportError:
            LOGGER.warning("wandb is not installed: 'pip install wandb' to log runs; continuing without W&B.")
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        # A Ray worker inherits the environment of the process that started Ray: if that process had used W&B,
        # WANDB_SERVICE points at its W&B service, and this run would live (and, if the worker is killed, stay "in
        # use") in another process's service. Each training process gets a service of its own.
        os.environ.pop("WANDB_SERVICE", None)
        save_dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=name, entity=entity, group=group, id=run_id, resume="allow",
                              dir=str(save_dir), config=config, mode=mode, reinit="finish_previous")
        LOGGER.info("W&B: %s run %s (%s)", mode, name, getattr(self.run, "url", None) or save_dir / "wandb")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        """Log one epoch's metrics at ``step`` (the epoch)."""
        if self.run is not None:
            self.run.log(dict(metrics), step=step)

    def finish(self) -> None:
        """Close the run (flushes offline files)."""
        if self.run is not None:
            self.run.finish()
            self.run = None
