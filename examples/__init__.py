"""Runnable example apps: ``hypercorn -k trio examples.<name>:app``."""
