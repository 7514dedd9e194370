"""The chat example: ``hypercorn -k trio examples.chat:app``."""

from .app import app as app

__all__ = ("app",)
