"""Face detection for REFINE's face-detail stage: OpenCV's Haar cascade, which ships inside
the opencv-python-headless wheel (no download). A detector is any callable from an RGB image
to (x, y, width, height) boxes, so deployments can plug in a stronger one."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

Box = tuple[int, int, int, int]
FaceDetector = Callable[[Any], list[Box]]


@cache
def _cascade() -> Any:
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's frontal-face cascade did not load")
    return cascade


def haar_faces(image: Any, max_faces: int = 8) -> list[Box]:
    """Frontal faces in a PIL image, largest first."""
    import cv2
    import numpy as np

    gray = cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2GRAY)
    found = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))
    boxes = [tuple(int(v) for v in box) for box in found]
    return sorted(boxes, key=lambda b: -b[2] * b[3])[:max_faces]
