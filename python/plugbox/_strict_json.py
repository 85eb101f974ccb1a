"""Strict JSON for frame headers (protocol.md §3), on CPython's ``_json`` accelerator.

Decoding rejects invalid UTF-8, lone surrogates, ``NaN``/``Infinity``, duplicate keys at any
depth, nesting deeper than :data:`MAX_DEPTH`, and trailing data. Encoding is compact, emits UTF-8,
never emits ``NaN``, and refuses anything the peer's strict decoder would reject (non-``str``
keys, which could collide once converted, nesting too deep, lone surrogates).

Why ``_json`` and not ``json``: ``import json`` pulls in ``re`` and ``enum`` and costs about
8 ms, more than a plugin's whole cold-start budget; ``_json`` costs about 0.2 ms.
"""

from __future__ import annotations

import _json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Callable, Final

MAX_DEPTH: Final = 32
_WHITESPACE: Final = " \t\n\r"  # RFC 8259 insignificant whitespace, nothing else


class StrictJSONError(ValueError):
    """The bytes are not JSON under the protocol's strict rules, or a value cannot be encoded."""


def _pairs_to_dict(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> object:
    raise StrictJSONError(f"{name} is not valid JSON")


class _ScannerContext:
    """The attributes ``_json.make_scanner`` reads from its context (a JSONDecoder's subset)."""

    strict = True  # control characters inside strings are rejected, as RFC 8259 requires
    object_hook = None
    object_pairs_hook = staticmethod(_pairs_to_dict)
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_reject_constant)


_CONTEXT: Final = _ScannerContext()


# One scanner for every call. Its only state is a key memo (an interning cache, cleared after
# each call), which a concurrent use could at worst fail to share: harmless.
_SCANNER: Final = _json.make_scanner(_CONTEXT)  # type: ignore[arg-type]


def _scan_again(text: str, start: int) -> tuple[object, int]:
    # Some CPython versions look JSONDecodeError up in sys.modules only, and fail with
    # SystemError when json.decoder was never imported. Import it now (error path only), rescan.
    import json.decoder  # noqa: F401

    return _SCANNER(text, start)


def loads(data: bytes) -> object:
    """Decode one JSON value from ``data`` under the protocol's strict rules."""
    try:
        text = str(data, "utf-8")  # strict: also refuses UTF-8-encoded surrogates
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"invalid UTF-8 at byte {exc.start}") from None
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        try:
            value, end = _SCANNER(text, start)
        except SystemError:
            value, end = _scan_again(text, start)
    except StopIteration as stop:
        raise StrictJSONError(f"expected a JSON value at character {stop.value}") from None
    except RecursionError:
        raise StrictJSONError(f"nesting deeper than {MAX_DEPTH}") from None
    except StrictJSONError:
        raise
    except ValueError as exc:  # json.JSONDecodeError
        raise StrictJSONError(str(exc)) from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise StrictJSONError(f"trailing data at character {end}")
    # Depth can exceed the limit only if there are more opening brackets than the limit.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_tree(value, check_keys=False)
    # A lone surrogate can only come from a \uD800-\uDFFF escape.
    if "\\u" in text and ("\\ud" in text or "\\uD" in text):
        _check_surrogates(value)
    return value


def _check_tree(value: object, *, check_keys: bool, depth: int = 1) -> None:
    """Refuse nesting deeper than MAX_DEPTH and (when encoding) non-``str`` keys.

    ``depth`` is the nesting depth of ``value`` itself (1: the top-level value).
    """
    stack: list[tuple[object, int]] = [(value, depth)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise StrictJSONError(f"nesting deeper than {MAX_DEPTH}")
        if isinstance(node, dict):
            if check_keys:
                for key in node:
                    if type(key) is not str:
                        raise StrictJSONError(f"object keys must be str, not {type(key).__name__}")
            children: Iterable[object] = node.values()
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        for item in children:
            if isinstance(item, (dict, list, tuple)):
                stack.append((item, depth + 1))


def _check_surrogates(value: object) -> None:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise StrictJSONError(f"lone surrogate in string {node!r}") from None
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _not_serialisable(value: object) -> object:
    raise TypeError(f"object of type {type(value).__name__} is not JSON-serialisable")


def _make_encoder(default: Callable[[object], object]) -> Callable[[object, int], list[str]]:
    return _json.make_encoder(
        # markers (reference-cycle detection): not needed, _check_tree refuses any cycle first,
        # as nesting too deep; and leaving them out makes the encoder stateless, so one
        # encoder serves every thread.
        None,
        default,
        _json.encode_basestring,  # keep non-ASCII as UTF-8: compact, and surrogates fail below
        None,  # indent
        ":",
        ",",
        False,  # sort_keys
        False,  # skipkeys
        False,  # allow_nan: NaN and Infinity raise instead of being emitted
    )


_ENCODER: Final = _make_encoder(_not_serialisable)
_CONSTANTS: Final = {None: "null", True: "true", False: "false"}
encode_str: Final = _json.encode_basestring
"""The JSON text of one ``str`` (lone surrogates pass here: :func:`to_utf8` refuses them)."""


def encode_value(value: object, depth: int = 1, default: Callable[[object], object] | None = None) -> str:
    """The compact JSON text of ``value``, found at nesting ``depth`` of the value being encoded
    (1: it is the whole value). Raises as :func:`dumps` does, except for lone surrogates, which
    :func:`to_utf8` refuses once the whole text is assembled."""
    kind = type(value)
    if kind is str:
        return encode_str(value)  # type: ignore[arg-type]
    if kind is bool or value is None:
        return _CONSTANTS[value]  # type: ignore[index]
    if kind is int:
        try:
            return int.__repr__(value)
        except ValueError as exc:  # more digits than sys.get_int_max_str_digits() allows
            raise StrictJSONError(str(exc)) from None
    if kind is dict and depth <= MAX_DEPTH:
        flat = _encode_flat_dict(value)  # type: ignore[arg-type]
        if flat is not None:
            return flat
    if isinstance(value, (dict, list, tuple)):
        _check_tree(value, check_keys=True, depth=depth)
    encoder = _ENCODER if default is None else _make_encoder(default)
    try:
        return "".join(encoder(value, 0))
    except ValueError as exc:  # out-of-range floats
        raise StrictJSONError(str(exc)) from None
    except RecursionError:  # a cycle that _check_tree could not see (a mapping's own items())
        raise StrictJSONError(f"nesting deeper than {MAX_DEPTH}") from None


def _encode_flat_dict(value: dict[object, object]) -> str | None:
    """A ``dict`` of ``str`` keys and ``str``/``int``/``bool``/``None`` values (the usual
    arguments of a call), encoded without the general machinery; ``None`` for any other dict."""
    parts = []
    for key, item in value.items():
        kind = type(item)
        if type(key) is not str:
            return None
        if kind is str:
            parts.append(f"{encode_str(key)}:{encode_str(item)}")  # type: ignore[arg-type]
        elif kind is int or kind is bool or item is None:
            parts.append(f"{encode_str(key)}:{encode_value(item)}")
        else:
            return None
    return "{" + ",".join(parts) + "}"


def to_utf8(text: str) -> bytes:
    """``text`` (assembled from :func:`encode_value`) as UTF-8; refuses lone surrogates."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise StrictJSONError("lone surrogate in a string") from None


def dumps(value: object, *, default: Callable[[object], object] | None = None) -> bytes:
    """Encode ``value`` as compact UTF-8 JSON.

    Raises ``TypeError`` for values JSON cannot hold (``default``, if given, may convert them),
    and :class:`StrictJSONError` for NaN/Infinity, non-``str`` keys, nesting deeper than
    :data:`MAX_DEPTH` and lone surrogates.
    """
    return to_utf8(encode_value(value, 1, default))
