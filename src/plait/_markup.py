"""reST inline markup out of docstrings, for where they are shown as they are.

Docstrings are written for Sphinx: ``code`` and :class:`plait.Hub`. An AsyncAPI
description is CommonMark, where those show as typed; ``python -m plait --help`` is
plain text. Only inline markup is converted: the rest of reST reads well enough.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ("commonmark", "plain")

# :class:`plait.Hub`, :meth:`~plait.App.asyncapi`, :py:func:`the title <plait.listener>`
_ROLE: Final = re.compile(r":(?:[\w.+-]+:)+`(?P<text>[^`]+)`")
_LITERAL: Final = re.compile(r"``(?P<text>[^`]+?)``")
_TITLED: Final = re.compile(r"^(?P<title>.+?)\s*<[^<>]+>$", re.DOTALL)


def _role_text(match: re.Match[str]) -> str:
    """What Sphinx shows for a cross-reference: its title, or its target (only the last
    dotted part after a ``~``)."""
    text = match["text"]
    titled = _TITLED.match(text)
    if titled is not None:
        return titled["title"]
    text = text.removeprefix("!")
    if text.startswith("~"):
        return text[1:].rpartition(".")[2]
    return text


def commonmark(text: str) -> str:
    """``text`` with reST's inline literals and roles as CommonMark code spans.

    Args:
        text: A docstring, or a part of one.

    Returns:
        ``x`` as `x`, :class:`plait.Hub` as `plait.Hub`.
    """
    text = _ROLE.sub(lambda match: f"`{_role_text(match)}`", text)
    return _LITERAL.sub(r"`\g<text>`", text)


def plain(text: str) -> str:
    """``text`` with reST's inline literals and roles as plain words.

    Args:
        text: A docstring, or a part of one.

    Returns:
        ``x`` as x, :class:`plait.Hub` as plait.Hub.
    """
    text = _ROLE.sub(_role_text, text)
    return _LITERAL.sub(r"\g<text>", text)
