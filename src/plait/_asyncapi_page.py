"""The page that renders an App's AsyncAPI document in a browser, and the copy of
AsyncAPI's React component that plait ships for it.

The component (``@asyncapi/react-component``, Apache-2.0) is in ``static/asyncapi/``:
its standalone bundle and its styles, as npm publishes them, with the version, the
checksums and how to refresh them in the README there. The page loads that copy from
plait itself by default, so it renders where browsers reach no CDN.
"""

from __future__ import annotations

import html
import json
import posixpath
from importlib.resources import files
from typing import Final

__all__ = ("COMPONENT_VERSION", "bundled_component", "component_paths", "docs_page")

COMPONENT_VERSION: Final = "3.2.1"
"""The version of ``@asyncapi/react-component`` in ``static/asyncapi/``."""

# The bundled files, and the media type each is served with.
_FILES: Final = {
    "js": ("index.js", "text/javascript; charset=utf-8"),
    "css": ("default.min.css", "text/css; charset=utf-8"),
}

# The component's own styles leave a narrow screen (below its 1024px breakpoint, where it
# shows the menu button) with two faults: a server's URL and its badges are inline
# elements with no break between them, so the last badge runs out of its box; and the
# menu button floats over the content's right-hand controls ("Expand all"). Here the
# badges wrap, and the button becomes a bar above the content instead. (The icon link
# spares the browser a request for /favicon.ico, which is not the App's to answer.)
_NARROW_CSS: Final = """\
.aui-root .font-mono { overflow-wrap: anywhere; }
.aui-root strong.uppercase { display: inline-block; }
.aui-root button.text-gray-500 { white-space: nowrap; }
@media (max-width: 1023px) {
  html { scroll-padding-top: 3.5rem; }
  .aui-root .burger-menu {
    top: 0; right: 0; bottom: auto; left: 0;
    width: 100%; height: 3rem; border-radius: 0;
    justify-content: flex-end; padding-right: 1rem;
    background: #fff; color: #2d3748;
  }
  .aui-root .burger-menu svg { color: #2d3748; width: 28px; height: 21px; }
  .aui-root .sidebar--wrapper { padding-top: 4rem; }
  #asyncapi { padding-top: 3rem; }
}
"""


def bundled_component(name: str) -> bytes:
    """One file of the bundled component: ``"js"`` (the standalone bundle) or ``"css"``."""
    filename, _ = _FILES[name]
    return files("plait").joinpath("static", "asyncapi", filename).read_bytes()


def component_paths(page_path: str) -> dict[str, tuple[str, str]]:
    """Where an App serves the bundled component beside the page at ``page_path``:
    ``{"js": (path, media type), "css": (path, media type)}``.

    The paths name the version, so browsers may keep the files for good: a plait that
    ships another version serves it at other paths.
    """
    base = page_path.rstrip("/") + "/static/"
    return {
        name: (f"{base}asyncapi-react-{COMPONENT_VERSION}.{name}", media_type)
        for name, (_, media_type) in _FILES.items()
    }


def docs_page(
    title: str,
    document_path: str,
    page_path: str,
    js_url: str | None,
    css_url: str | None,
) -> bytes:
    """The HTML page that renders the document with AsyncAPI's React component.

    Args:
        title: The application's title, for the page's.
        document_path: Where the App serves the document.
        page_path: Where the App serves this page.
        js_url: Where the page loads the component's standalone bundle; ``None``: the
            bundled copy, at its :func:`component_paths`.
        css_url: Where the page loads the component's styles; ``None``: the bundled copy.

    Every address the App serves is relative to the page's, so the page works mounted
    below a prefix too. If the bundle does not load, the page says so and links to the
    document instead of staying blank.
    """
    base = page_path if page_path.endswith("/") else posixpath.dirname(page_path) or "/"
    bundled = component_paths(page_path)
    js = js_url or posixpath.relpath(bundled["js"][0], base)
    css = css_url or posixpath.relpath(bundled["css"][0], base)
    relative = posixpath.relpath(document_path, base)
    config = {
        "schema": {"url": relative, "options": {"method": "GET"}},
        "config": {"show": {"sidebar": True}},
    }
    script_data = json.dumps(config).replace("</", "<\\/")
    link = f'<a href="{html.escape(relative)}">{html.escape(document_path)}</a>'
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}: AsyncAPI</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{html.escape(css)}">
<style>
{_NARROW_CSS}</style>
</head>
<body>
<div id="asyncapi"></div>
<p id="asyncapi-unavailable" hidden>This page could not load AsyncAPI's component from
<code>{html.escape(js)}</code>, so it cannot show the document here. It is at {link} as JSON.</p>
<noscript><p>This page needs JavaScript. The document is at {link} as JSON.</p></noscript>
<script src="{html.escape(js)}"></script>
<script>
const config = {script_data};
config.schema.url = new URL(config.schema.url, document.baseURI).href;
if (typeof AsyncApiStandalone === "undefined") {{
  document.getElementById("asyncapi-unavailable").hidden = false;
}} else {{
  AsyncApiStandalone.render(config, document.getElementById("asyncapi"));
}}
</script>
</body>
</html>
""".encode()
