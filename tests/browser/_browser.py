"""The headless Chromium the browser tests drive with Playwright, and their bounds.

Chromium comes from the system (Debian's ``chromium`` package; ``.ci/run`` installs it);
Playwright downloads no browser here. Without Chromium the tests fail, they do not skip.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from playwright.sync_api import BrowserContext, Page

from plait.testing import HypercornServer, run_hypercorn
from plait.types import ASGIApp

CHROMIUM = Path(os.environ.get("PLAIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 5_000  # every wait on a page is bounded by this

Worker = Literal["asyncio", "trio"]
WORKERS: list[Worker] = ["asyncio", "trio"]


class Browser:
    """One headless Chromium: its pages, and the script errors any of them raised."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.errors: list[str] = []
        self._given: list[Page] = []

    def page(self) -> Page:
        """A page (the one Chromium opened first, then new ones) whose errors are kept."""
        unused = [page for page in self.context.pages if page not in self._given]
        page = unused[0] if unused else self.context.new_page()
        self._given.append(page)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: {error}"))
        return page


def serve(app: ASGIApp, worker_class: Worker = "trio") -> AbstractContextManager[HypercornServer]:
    """``run_hypercorn`` for pages: the idle keep-alive HTTP connection of each page would
    hold hypercorn's shutdown for its whole ``graceful_timeout`` (3 s by default)."""
    return run_hypercorn(app, worker_class=worker_class, graceful_timeout=0.5)
