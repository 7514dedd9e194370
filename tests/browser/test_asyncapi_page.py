"""The AsyncAPI page of ``examples.documented`` rendered by AsyncAPI's React component in
headless Chromium, with the component's bundle served locally (no CDN is reachable in
tests): the application chooses where the page loads it from, as FastAPI's
``swagger_js_url`` does. The bundle comes from npm (``tests/asyncapi/package.json``)."""

from __future__ import annotations

from pathlib import Path

import examples.documented
import pytest
from _browser import WORKERS, Browser, Worker, serve
from playwright.sync_api import expect

from plait import App
from plait.types import Receive, Scope, Send

COMPONENT = (
    Path(__file__).parents[1] / "asyncapi" / "node_modules" / "@asyncapi" / "react-component"
)
FILES = {
    "/vendor/asyncapi.js": (COMPONENT / "browser" / "standalone" / "index.js", b"text/javascript"),
    "/vendor/asyncapi.css": (COMPONENT / "styles" / "default.min.css", b"text/css"),
}


async def vendor(scope: Scope, receive: Receive, send: Send) -> None:
    """The component's files, as an application serving its own copy would."""
    if scope["type"] != "http":
        return
    path, media_type = FILES.get(scope["path"], (None, b"text/plain"))
    status, body = (404, b"Not Found") if path is None else (200, path.read_bytes())
    headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def documented_app() -> App:
    """The example's routes and document, with the page pointed at the local bundle."""
    example = examples.documented.app
    return App(
        routes=example.routes,
        fallback=vendor,
        title=example.title,
        version=example.version,
        description=example.description,
        servers=example.servers,
        asyncapi_path="/asyncapi.json",
        asyncapi_docs_path="/docs/asyncapi",
        asyncapi_js_url="/vendor/asyncapi.js",
        asyncapi_css_url="/vendor/asyncapi.css",
    )


@pytest.mark.parametrize("worker", WORKERS)
def test_the_page_renders_the_document(browser: Browser, worker: Worker) -> None:
    """What FastAPI users get at ``/docs``: the API's title and version, each channel's
    address, its operations and their messages' fields, rendered from the JSON."""
    assert COMPONENT.is_dir(), "run `npm ci --prefix tests/asyncapi` (nox -s tests does)"
    with serve(documented_app(), worker) as server:
        page = browser.page()
        page.goto(server.url("/docs/asyncapi", scheme="http"))
        body = page.locator("#asyncapi")
        expect(body).to_contain_text("Markets 1.0.0")
        expect(body).to_contain_text("Live quotes for the symbols a client watches.")
        expect(body).to_contain_text("/markets/{market}")
        expect(body).to_contain_text("/status")
        expect(body).to_contain_text("Watch or unwatch a symbol; the answer lists what is watched.")
        expect(body).to_contain_text("A quote for each watched symbol every")
        expect(body).to_contain_text("Start receiving quotes for a symbol.")  # Watch's doc
        assert "Error" not in body.inner_text()[:200]
