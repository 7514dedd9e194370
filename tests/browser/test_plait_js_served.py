"""The App serves plait.js at its ``client_path``, under real hypercorn (both workers).

No browser here: urllib asks, as a browser's cache would (``If-None-Match``).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from importlib.resources import files

import pytest
from _browser import WORKERS, Worker

import plait
from plait.testing import run_hypercorn

SCRIPT = files("plait").joinpath("static", "plait.js").read_bytes()


def ask(url: str, method: str = "GET", **headers: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a request; an error status too."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.mark.parametrize("worker", WORKERS)
def test_the_app_serves_plait_js_at_its_client_path(worker: Worker) -> None:
    app = plait.App(client_path="/static/plait.js")
    with run_hypercorn(app, worker_class=worker) as server:
        url = server.url("/static/plait.js", scheme="http")
        status, headers, body = ask(url)
        assert status == 200
        assert headers["content-type"] == "text/javascript"
        assert headers["cache-control"] == "no-cache"
        assert body == SCRIPT
        assert b"export class Client" in body
        assert b"export function connect" in body

        status, head_headers, body = ask(url, "HEAD")
        assert (status, body) == (200, b"")
        assert head_headers["content-length"] == str(len(SCRIPT))
        assert head_headers["etag"] == headers["etag"]

        status, _, body = ask(url, **{"If-None-Match": headers["etag"]})
        assert (status, body) == (304, b"")
        assert ask(url, **{"If-None-Match": '"another"'})[0] == 200

        status, post_headers, _ = ask(url, "POST")
        assert status == 405
        assert post_headers["allow"] == "GET, HEAD"

        assert ask(server.url("/plait.js", scheme="http"))[0] == 404  # only at its path


def test_without_a_client_path_nothing_is_served() -> None:
    with run_hypercorn(plait.App()) as server:
        assert ask(server.url("/plait.js", scheme="http"))[0] == 404
