"""``model=`` for ``raytrain val`` / ``predict`` / ``benchmark``: a raytrain checkpoint or an exported file, opened
the same way, so the command handlers need one call and stay the same for both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raytrain.export.spec import ExportMeta, exported_format
from raytrain.parsing import ConfigError


@dataclass(frozen=True)
class OpenedModel:
    """What ``model=`` names, opened but not yet placed on a device.

    Attributes:
        path: the file.
        trained: the defaults a command takes from it (``data``, ``imgsz``, ``single_cls``): the checkpoint's
            training config, or what the exported file recorded (``imgsz`` is the export's).
        checkpoint: the checkpoint dict of a ``.pt`` (None for an exported file).
        meta: the metadata of an exported file (None for a ``.pt``).
    """

    path: str
    trained: dict[str, Any]
    checkpoint: dict[str, Any] | None = None
    meta: ExportMeta | None = None

    def model(self, device: Any, imgsz: int) -> Any:
        """The eval-mode model on ``device`` for ``imgsz`` inputs: a ``DetectionModel``, or the exported file's
        runner (refused in one line when a static export was made for another size)."""
        if self.meta is None:
            from raytrain.models.checkpoint import model_from_checkpoint

            return model_from_checkpoint(self.checkpoint).to(device).eval()
        from raytrain.export.runners import load_exported

        if not self.meta.dynamic and [imgsz, imgsz] != list(self.meta.imgsz):
            size = self.meta.imgsz[0] if self.meta.imgsz[0] == self.meta.imgsz[1] else self.meta.imgsz
            raise ConfigError(f"model={Path(self.path).name} is a static export for imgsz={size}, so it takes only "
                              f"{size} inputs; imgsz={imgsz} was asked. Leave imgsz unset, or export with "
                              "dynamic=True.")
        if self.meta.dynamic and imgsz % self.meta.stride:
            raise ConfigError(f"imgsz={imgsz}: model={Path(self.path).name} takes multiples of {self.meta.stride}.")
        return load_exported(self.path, device=str(device))


def open_model(path: str) -> OpenedModel:
    """Open ``model=path``: an exported file by its name (``.onnx``, ``.torchscript``, OpenVINO), else a checkpoint.

    Raises:
        ConfigError: one line naming the file (see ``inspect_checkpoint`` and ``runners.read_meta``).
    """
    if exported_format(path) is None:
        from raytrain.models.checkpoint import inspect_checkpoint

        ckpt = inspect_checkpoint(path, key="model")
        trained = ckpt.get("config") or {}
        return OpenedModel(path, {k: trained[k] for k in ("data", "imgsz", "single_cls") if k in trained}, ckpt)
    from raytrain.export.runners import read_meta

    meta = read_meta(path)
    trained = {**meta.train, "imgsz": meta.imgsz[0]}  # val's loader letterboxes to squares
    if not meta.dynamic and meta.imgsz[0] != meta.imgsz[1]:
        raise ConfigError(f"model={path} is a static {meta.imgsz[0]}x{meta.imgsz[1]} export; raytrain val and "
                          "predict letterbox to squares: export with a square imgsz or dynamic=True.")
    return OpenedModel(path, trained, meta=meta)
