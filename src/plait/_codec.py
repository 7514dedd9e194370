"""Every encode and decode plait does, in one place: the only module that imports msgspec.

Encoders and decoders are built once (here for untyped JSON, per route for typed
messages) and reused; msgspec's errors are converted to :class:`MessageDecodeError`.
"""

from __future__ import annotations

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


class MessageCodec:
    """Decodes messages to one type and encodes replies; built once per route.

    ``str`` takes a text message (or UTF-8 binary), ``bytes`` a binary message (or the
    text's UTF-8), no annotation the message as it came; anything else is JSON decoded
    and validated by msgspec into the type (``dict``, ``list``, a ``Struct``, a tagged
    union of Structs, a dataclass, a ``TypedDict``...). Replies: ``str`` as text, bytes
    as binary, ``None`` as nothing, anything else as JSON in a ``mode`` message.

    Args:
        annotation: The type messages decode to (``Any`` for the raw message).
        mode: ``"text"`` or ``"binary"``: the frames JSON replies go out in.
    """

    __slots__ = ("_annotation", "_decoder", "_mode")

    def __init__(self, annotation: Any, mode: str = "text") -> None:
        if mode not in ("text", "binary"):
            raise ValueError(f"mode must be 'text' or 'binary', not {mode!r}")
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
            TypeError: The value cannot be encoded as JSON.
        """
        if value is None:
            return None
        if isinstance(value, str):
            return {"type": "websocket.send", "text": value}
        if isinstance(value, bytes | bytearray | memoryview):
            return {"type": "websocket.send", "bytes": bytes(value)}
        return self.frame(encode_json(value))

    def frame(self, data: bytes) -> dict[str, Any]:
        """The ``websocket.send`` message for JSON already encoded, in the route's mode."""
        if self._mode == "text":
            return {"type": "websocket.send", "text": data.decode()}
        return {"type": "websocket.send", "bytes": data}


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
