"""Every encode and decode plait does, in one place: the only module that imports msgspec.

Encoders and decoders are built once (here for untyped JSON, per route for typed
messages) and reused; msgspec's errors are converted to :class:`MessageDecodeError`.
"""

from __future__ import annotations

import enum
import re
import typing
from collections.abc import MutableMapping
from typing import Any, Final

import msgspec

from ._exceptions import MessageDecodeError

__all__ = (
    "ConversionError",
    "MessageCodec",
    "convert",
    "decode_json",
    "encode_json",
    "encode_json_text",
)

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


# msgspec decodes recursively: a document nested deeper than Python's recursion limit
# (10,000 "[" are enough) raises RecursionError, which is the client's fault too.
_TOO_DEEP: Final = "invalid JSON message: nested too deeply"


def decode_json(data: str | bytes) -> Any:
    """Decode one JSON document.

    Raises:
        MessageDecodeError: ``data`` is not valid JSON; the message says where.
    """
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise MessageDecodeError(f"invalid JSON message: {exc}") from None
    except RecursionError:
        raise MessageDecodeError(_TOO_DEEP) from None


class ConversionError(ValueError):
    """A handshake value could not be converted to the annotated type."""


def convert(value: Any, annotation: Any) -> Any:
    """Convert a value taken from the handshake (strings, or lists of them) to a type.

    Lax, as query strings need: ``"5"`` becomes ``5`` for ``int``, ``"true"`` becomes
    ``True`` for ``bool``; ``list[int]`` takes a list of strings.

    Raises:
        ConversionError: The value does not fit; the message says what was wanted in
            words a client's author understands (``expected an integer, got "abc"``).
    """
    if annotation is str and type(value) is str:
        return value
    try:
        return msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError as exc:
        raise ConversionError(_in_words(str(exc), value, annotation)) from None
    except TypeError as exc:  # a type msgspec cannot convert to
        raise ConversionError(f"cannot convert to {annotation!r}: {exc}") from None


# msgspec's words name JSON types ("Expected `int`, got `str`"), but every handshake
# value is a string: say what the value should look like instead.
_AT: Final = r"(?: - at `\$\[(?P<at>\d+)\]`)?$"  # an item of a list: "- at `$[1]`"
_EXPECTED: Final = re.compile(
    r"Expected `(?P<type>[^`]+)`(?P<constraint>.*?)(?:, got `[^`]+`)?" + _AT
)
_INVALID: Final = re.compile(r"Invalid (?P<what>.+?)(?: '.*')?" + _AT)
_TYPE_WORDS: Final = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "bytes": "base64 text",
    "object": "an object",
    "array": "a list",
}
_INVALID_WORDS: Final = {
    "UUID": "a UUID",
    "RFC3339 encoded datetime": "a date and time (RFC 3339, 2026-01-31T12:00:00Z)",
    "RFC3339 encoded date": "a date (2026-01-31)",
    "RFC3339 encoded time": "a time (12:00:00)",
    "decimal string": "a decimal number",
}
_SHOWN: Final = 40  # characters of the client's value quoted back, at most


def _in_words(message: str, value: Any, annotation: Any) -> str:
    """msgspec's validation message, for the author of a query string or a header."""
    if (match := _EXPECTED.match(message)) is not None:
        names = [name for name in match["type"].split(" | ") if name != "null"]
        words = " or ".join(_TYPE_WORDS.get(name, f"a {name}") for name in names)
        wanted = f"{words}{match['constraint'].replace(' matching regex', ' matching')}"
    elif (match := _INVALID.match(message)) is not None:
        if match["what"] == "enum value":
            choices = _choices(annotation)
            wanted = "one of " + ", ".join(map(repr, choices)) if choices else "an allowed value"
        else:
            wanted = _INVALID_WORDS.get(match["what"], f"a valid {match['what']}")
    else:
        return message
    at = match["at"]
    if at is not None and isinstance(value, list) and int(at) < len(value):
        return f"item {int(at) + 1}: expected {wanted}, got {_quoted(value[int(at)])}"
    return f"expected {wanted}, got {_quoted(value)}"


def _quoted(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
    return encode_json_text(shown)


def _choices(annotation: Any) -> list[Any]:
    """The values a ``Literal`` or an ``Enum`` (maybe in a list or ``| None``) allows."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [member.value for member in annotation]
    for arg in typing.get_args(annotation) if origin is not None else ():
        if choices := _choices(arg):
            return choices
    return []


class MessageCodec:
    """Decodes messages to one type and encodes replies; built once per route.

    ``str`` takes a text message (or UTF-8 binary), ``bytes`` a binary message (or the
    text's UTF-8), no annotation the message as it came; anything else is JSON decoded
    and validated by msgspec into the type (``dict``, ``list``, a ``Struct``, a tagged
    union of Structs, a dataclass, a ``TypedDict``...). Replies: ``None`` is nothing;
    with no ``mode``, ``str`` goes out as text, bytes as binary and anything else as JSON
    text. A ``mode`` sends everything in that kind of frame, as Litestar does: in
    ``"text"`` bytes are decoded as UTF-8, in ``"binary"`` text is encoded.

    Args:
        annotation: The type messages decode to (``Any`` for the raw message).
        mode: ``None`` (by the reply's type), ``"text"`` or ``"binary"``.
    """

    __slots__ = ("_annotation", "_decoder", "_mode")

    def __init__(self, annotation: Any, mode: str | None = None) -> None:
        if mode not in (None, "text", "binary"):
            raise ValueError(f"mode must be None, 'text' or 'binary', not {mode!r}")
        self._annotation = annotation
        self._mode = mode
        self._decoder: msgspec.json.Decoder[Any] | None = None
        if annotation not in (str, bytes, Any):
            self._decoder = msgspec.json.Decoder(annotation)

    def decode(self, message: MutableMapping[str, Any]) -> Any:
        """Decode a ``websocket.receive`` message.

        Raises:
            MessageDecodeError: The message does not decode or validate; the message
                names the failing field (``$.user.name``).
        """
        text, data = message.get("text"), message.get("bytes")
        if self._decoder is not None:
            try:
                return self._decoder.decode(text if text is not None else data or b"")
            except msgspec.ValidationError as exc:
                raise MessageDecodeError(f"invalid message: {exc}") from None
            except msgspec.DecodeError as exc:
                raise MessageDecodeError(f"invalid JSON message: {exc}") from None
            except RecursionError:
                raise MessageDecodeError(_TOO_DEEP) from None
        annotation = self._annotation
        if annotation is str and text is None:
            try:
                return bytes(data or b"").decode()
            except UnicodeDecodeError:
                raise MessageDecodeError("invalid message: binary data is not UTF-8") from None
        if annotation is bytes and data is None:
            return str(text).encode()
        return text if text is not None else data

    def encode(self, value: Any) -> dict[str, Any] | None:
        """The ``websocket.send`` message for a reply, or None to send nothing.

        Raises:
            TypeError: The value cannot be encoded as JSON, or the route sends text and
                it is bytes that are not UTF-8.
        """
        if value is None:
            return None
        if isinstance(value, str):
            if self._mode == "binary":
                return {"type": "websocket.send", "bytes": value.encode()}
            return {"type": "websocket.send", "text": value}
        if isinstance(value, bytes | bytearray | memoryview):
            if self._mode == "text":
                try:
                    return {"type": "websocket.send", "text": bytes(value).decode()}
                except UnicodeDecodeError:
                    raise TypeError(
                        "the route sends text (mode='text') but the reply is bytes that "
                        "are not UTF-8: return str, or use mode='binary'"
                    ) from None
            return {"type": "websocket.send", "bytes": bytes(value)}
        return self.frame(encode_json(value))

    def frame(self, data: bytes) -> dict[str, Any]:
        """The ``websocket.send`` message for JSON already encoded, in the route's mode
        (text unless it is ``"binary"``)."""
        if self._mode == "binary":
            return {"type": "websocket.send", "bytes": data}
        return {"type": "websocket.send", "text": data.decode()}


def encode_payload(message: Any) -> bytes:
    """Frame a channel message for a backend, keeping its kind: bytes, str or JSON."""
    if isinstance(message, bytes | bytearray | memoryview):
        return b"b" + bytes(message)
    if isinstance(message, str):
        return b"s" + message.encode()
    return b"j" + encode_json(message)


def decode_payload(payload: bytes) -> Any:
    """The message :func:`encode_payload` framed (JSON comes back as plain data)."""
    kind, body = payload[:1], payload[1:]
    if kind == b"b":
        return bytes(body)
    if kind == b"s":
        return body.decode()
    return decode_json(body)
