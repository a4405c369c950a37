"""The draw-a-digit web demo and prediction API (``lenet5 serve``); see :mod:`.app`."""

from .app import create_app

__all__ = ["create_app"]
