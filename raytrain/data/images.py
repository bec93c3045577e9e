"""Image files: which suffixes count as images, and decoding one into the RGB array every consumer takes.

The dataset (label scan, loader, caches) and ``raytrain predict`` both read images through here, so a file that
trains is a file that predicts, decoded the same way.
"""

from __future__ import annotations

import cv2
import numpy as np

from raytrain.data.common import DatasetError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


def decode_image(im_file: str) -> np.ndarray | None:
    """The file's pixels as OpenCV decodes them (BGR or grey, 8 or 16 bits or float, EXIF orientation applied), or
    None when the file is missing, unreadable or not an image."""
    try:
        img = cv2.imread(str(im_file), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        return None
    return None if img is None or img.size == 0 else img


def load_image(im_file: str) -> np.ndarray:
    """Decode an image as ``(h, w, 3)`` uint8 RGB, EXIF orientation applied.

    Grayscale is replicated to 3 channels, alpha is dropped, 16-bit and float images are scaled to 8 bits
    (float images are taken as [0, 1]).

    Raises:
        DatasetError: the file is missing, unreadable or not an image.
    """
    img = decode_image(im_file)
    if img is None:
        raise DatasetError(f"{im_file}: missing, unreadable or corrupt image.")
    if img.dtype == np.uint16:
        img = cv2.convertScaleAbs(img, alpha=255.0 / 65535.0)
    elif img.dtype != np.uint8:
        img = cv2.convertScaleAbs(np.nan_to_num(img.astype(np.float32)), alpha=255.0)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
