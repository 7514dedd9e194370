"""``python -m plait``: commands for applications built with plait.

``python -m plait asyncapi module:app [--output FILE]`` writes the App's AsyncAPI
document as JSON (to standard output by default), for a build step or a check-in.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

from ._app import App
from ._markup import plain


def load_app(target: str) -> App:
    """The App named by ``module:attribute`` (``examples.documented:app``).

    Raises:
        SystemExit: The target is malformed, cannot be imported, or is not an App.
    """
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise SystemExit(
            f"expected module:attribute, for example examples.chat:app, not {target!r}"
        )
    sys.path.insert(0, ".")  # as hypercorn does: the current directory's modules
    try:
        app = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise SystemExit(f"cannot load {target!r}: {exc}") from None
    if not isinstance(app, App):
        raise SystemExit(f"{target!r} is a {type(app).__name__}, not a plait.App")
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run a command (``python -m plait --help`` lists them)."""
    parser = argparse.ArgumentParser(
        prog="python -m plait",
        description=plain(__doc__ or ""),  # plain text in a terminal, not reST
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    asyncapi = commands.add_parser("asyncapi", help="write the AsyncAPI document as JSON")
    asyncapi.add_argument("app", help="the App, as module:attribute (examples.chat:app)")
    asyncapi.add_argument("--output", "-o", help="the file to write (default: standard output)")
    args = parser.parse_args(argv)
    text = json.dumps(load_app(args.app).asyncapi(), indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
