"""Every encode and decode plait does, in one place: the only module that imports msgspec.

Encoders and decoders are built once (here for untyped JSON, per route for typed
messages) and reused; msgspec's errors are converted to :class:`MessageDecodeError`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ._exceptions import MessageDecodeError

__all__ = ("ConversionError", "convert", "decode_json", "encode_json", "encode_json_text")

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder()


def encode_json(data: Any) -> bytes:
    """Encode ``data`` as JSON bytes.

    Raises:
        TypeError: ``data`` holds a value JSON cannot represent.
    """
    try:
        return _encoder.encode(data)
    except (msgspec.EncodeError, TypeError) as exc:
        raise TypeError(f"cannot encode the message as JSON: {exc}") from None


def encode_json_text(data: Any) -> str:
    """Encode ``data`` as a JSON string (for text frames)."""
    return encode_json(data).decode()


def decode_json(data: str | bytes) -> Any:
    """Decode one JSON document.

    Raises:
        MessageDecodeError: ``data`` is not valid JSON; the message says where.
    """
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"invalid JSON message: {exc}") from None


class ConversionError(ValueError):
    """A handshake value could not be converted to the annotated type."""


def convert(value: Any, annotation: Any) -> Any:
    """Convert a value taken from the handshake (strings, or lists of them) to a type.

    Lax, as query strings need: ``"5"`` becomes ``5`` for ``int``, ``"true"`` becomes
    ``True`` for ``bool``; ``list[int]`` takes a list of strings.

    Raises:
        ConversionError: The value does not fit; the message says why (msgspec's words).
    """
    if annotation is str and type(value) is str:
        return value
    try:
        return msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError as exc:
        raise ConversionError(str(exc)) from None
    except TypeError as exc:  # a type msgspec cannot convert to
        raise ConversionError(f"cannot convert to {annotation!r}: {exc}") from None
