"""The AsyncAPI page of ``examples.documented`` rendered by AsyncAPI's React component in
headless Chromium under real hypercorn, with no network but the loopback: the App serves
the copy of the component that ships with plait, so the page needs no CDN (issue 18,
point 5). It fits a phone's screen too, and says where the document is when the
component does not load instead of staying blank."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

import examples.documented
import pytest
from _browser import WORKERS, Browser, Worker, serve
from playwright.sync_api import ConsoleMessage, Page, Route, expect

from plait import App

PHONE = {"width": 390, "height": 844}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def documented_app(
    servers: Sequence[str] = ("ws://127.0.0.1:8000",), js_url: str | None = None
) -> App:
    """The example's routes and document, its page at a path below a directory; the
    page loads plait's own copy of the component unless ``js_url`` says otherwise."""
    example = examples.documented.app
    elsewhere = {} if js_url is None else {"asyncapi_js_url": js_url}
    return App(
        routes=example.routes,
        title=example.title,
        version=example.version,
        description=example.description,
        servers=list(servers),
        asyncapi_path="/asyncapi.json",
        asyncapi_docs_path="/docs/asyncapi",
        **elsewhere,
    )


def offline(page: Page) -> list[str]:
    """Abort every request the page makes beyond the loopback, as with no network; the
    list it returns fills with their URLs."""
    blocked: list[str] = []

    def handle(route: Route) -> None:
        url = route.request.url
        if url.startswith("data:") or urlsplit(url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", handle)
    return blocked


def console_errors(page: Page) -> list[str]:
    """The console's errors (a failed load among them), as the page logs them."""
    errors: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", keep)
    return errors


@pytest.mark.parametrize("worker", WORKERS)
def test_the_page_renders_the_document_offline(browser: Browser, worker: Worker) -> None:
    """What FastAPI users get at ``/docs``: the API's title and version, each channel's
    address, its operations and their messages' fields, rendered from the JSON, with
    nothing asked of the internet and nothing in the console."""
    with serve(documented_app(), worker) as server:
        page = browser.page()
        blocked = offline(page)
        errors = console_errors(page)
        page.goto(server.url("/docs/asyncapi", scheme="http"))
        body = page.locator("#asyncapi")
        expect(body).to_contain_text("Markets 1.0.0")
        expect(body).to_contain_text("Live quotes for the symbols a client watches.")
        expect(body).to_contain_text("/markets/{market}")
        expect(body).to_contain_text("/status")
        expect(body).to_contain_text("Watch or unwatch a symbol; the answer lists what is watched.")
        expect(body).to_contain_text("A quote for each watched symbol every")
        expect(body).to_contain_text("Start receiving quotes for a symbol.")  # Watch's doc
        expect(body).to_contain_text("markets_market.receive.watch")  # an operation's id
        assert "Error" not in body.inner_text()[:200]
        expect(page.locator("#asyncapi-unavailable")).to_be_hidden()
    assert blocked == []
    assert errors == []


def overlaps(a: dict[str, float] | None, b: dict[str, float] | None) -> bool:
    assert a is not None
    assert b is not None
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


def test_the_page_fits_a_phone(browser: Browser) -> None:
    """On a 390x844 screen nothing runs off to the side (a server's URL and its badges
    wrap), and the menu button covers none of the "Expand all" buttons: each one, once
    in view, is the element a tap at its centre reaches."""
    app = documented_app(servers=["wss://quotes.example.com:8443/markets"])
    with serve(app) as server:
        page = browser.page()
        offline(page)
        page.set_viewport_size(PHONE)
        page.goto(server.url("/docs/asyncapi", scheme="http"))
        expect(page.locator("#asyncapi")).to_contain_text("/markets/{market}")
        menu = page.locator(".burger-menu")
        expect(menu).to_be_visible()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the page is {widths[0]}px wide on a {widths[1]}px screen"
        server_box = page.locator("#servers .shadow").first.bounding_box()
        badge = page.locator("#servers strong", has_text="default").bounding_box()
        assert server_box is not None
        assert badge is not None
        assert badge["x"] + badge["width"] <= server_box["x"] + server_box["width"]

        expand = page.get_by_role("button", name="Expand all").filter(visible=True)
        assert expand.count() >= 3
        for index in range(expand.count()):
            button = expand.nth(index)
            button.scroll_into_view_if_needed()
            assert not overlaps(menu.bounding_box(), button.bounding_box()), index
            reached = button.evaluate(
                """(button) => {
                    const box = button.getBoundingClientRect();
                    const x = box.left + box.width / 2, y = box.top + box.height / 2;
                    return button.contains(document.elementFromPoint(x, y));
                }"""
            )
            assert reached, f"the menu covers 'Expand all' number {index}"


def test_a_page_whose_component_does_not_load_links_to_the_document(browser: Browser) -> None:
    """Where the bundle does not come (a CDN the browser cannot reach), the page says so
    and links to the JSON, instead of a white page and a ReferenceError."""
    app = documented_app(js_url="https://cdn.example.com/asyncapi/index.js")
    with serve(app) as server:
        page = browser.page()
        blocked = offline(page)
        page.goto(server.url("/docs/asyncapi", scheme="http"))
        notice = page.locator("#asyncapi-unavailable")
        expect(notice).to_be_visible()
        expect(notice).to_contain_text("could not load AsyncAPI's component")
        link = notice.get_by_role("link", name="/asyncapi.json")
        link.click()
        page.wait_for_url(server.url("/asyncapi.json", scheme="http"))
        expect(page.locator("body")).to_contain_text('"asyncapi":"3.0.0"')
    assert blocked == ["https://cdn.example.com/asyncapi/index.js"]
