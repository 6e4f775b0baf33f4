"""Detector backends; importing this package registers every backend that exists.

Backends whose heavy dependencies are missing still register: they import
those lazily in ``setup()`` and raise a UserError with the install step.
The stage and its config are in :mod:`stages.detect`.
"""
import importlib

from stages.detectors.base import FrameDetections, build_detector, detector_class

for _backend in ("color", "lite", "ssd", "detectron2"):
    try:
        importlib.import_module(f"stages.detectors.{_backend}")
    except ModuleNotFoundError as missing:  # a backend file not written yet
        if missing.name != f"stages.detectors.{_backend}":
            raise

__all__ = ["FrameDetections", "build_detector", "detector_class"]
