"""A command's argument and result schemas, derived from its type hints and docstring.

The plugin sends them in ``hello`` (``protocol.md`` §3.1, ``schemas``); the host validates each
call's arguments against them before the command runs. The schemas use the subset of JSON
Schema the host accepts (``docs/authoring.md``): ``int`` is ``integer``, ``float`` ``number``,
``str`` ``string``, ``bool`` ``boolean``, ``None`` ``null``, ``list[T]`` an array, ``dict[str,
T]`` an object, ``T | None`` a type list or ``anyOf``, ``Literal[...]`` an ``enum``, a
``TypedDict`` an object with ``properties`` and ``required``, ``bytes`` the call's binary body
(``contentMediaType: application/octet-stream``); anything else, or no hint, is ``{}`` (any
value). A parameter with a default is not required; without ``**kwargs``, no other argument is
accepted.

Neither ``inspect`` nor ``typing`` is imported here: together they cost about 18 ms, six times
a plugin's cold start. Parameters come from the function's code object; string annotations
(``from __future__ import annotations``) are evaluated in the function's globals; ``typing``'s
constructs are recognised through ``sys.modules["typing"]``, which a plugin that uses them has
imported. Derivation never raises: what cannot be read is ``{}``, a command that is not a
plain function has no schema (the host does not validate its calls).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final

    Schema = dict[str, object]

BINARY: Final = "application/octet-stream"  # the contentMediaType of the body argument
MAX_DESCRIPTION_CHARS: Final = 1000  # the host refuses longer descriptions (arg_schema.rs)
MAX_DEPTH: Final = 8  # nested hints deeper than this (a recursive TypedDict) are `{}`
# Within the host's bounds (src/broker/arg_schema/limits.rs): a hint past them is `{}`.
MAX_ENUM_ITEMS: Final = 1024
MAX_ANY_OF: Final = 16
_CO_VARARGS: Final = 0x04
_CO_VARKEYWORDS: Final = 0x08
_SCALARS: Final = {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}
_BYTES: Final = (bytes, bytearray, memoryview)
_ARGS_HEADINGS: Final = ("args:", "arguments:", "parameters:", "params:", "keyword args:")


def command_schema(func: Callable[..., object]) -> Schema | None:
    """``{"description", "args", "result"}`` for ``func``, or ``None`` if it is not a plain
    function (or bound method) whose parameters can be read."""
    try:
        return _derive(func)
    except Exception:  # a hostile or odd object: no schema, no validation
        return None


def _derive(func: Callable[..., object]) -> Schema | None:
    bound = getattr(func, "__self__", None) is not None and hasattr(func, "__func__")
    target = getattr(func, "__func__", func) if bound else func
    for _ in range(16):  # functools.wraps: describe the wrapped function, as inspect does
        wrapped = getattr(target, "__wrapped__", None)
        if wrapped is None or getattr(wrapped, "__code__", None) is None:
            break
        target = wrapped
    code = getattr(target, "__code__", None)
    if code is None:
        return None
    hints = _hints(target)
    doc = getattr(target, "__doc__", None)
    summary, arg_docs = _parse_doc(doc if isinstance(doc, str) else "")
    args = _args_schema(target, code, hints, arg_docs, skip_first=bound)
    schema: Schema = {"args": args, "result": _to_schema(hints["return"], 0) if "return" in hints else {}}
    if summary:
        schema["description"] = summary
    return schema


def _args_schema(
    func: object, code: object, hints: dict[str, object], docs: dict[str, str], skip_first: bool
) -> Schema:
    argcount, posonly = code.co_argcount, code.co_posonlyargcount  # type: ignore[attr-defined]
    kwonly, flags, names = code.co_kwonlyargcount, code.co_flags, code.co_varnames  # type: ignore[attr-defined]
    defaults = getattr(func, "__defaults__", None) or ()
    kwdefaults = getattr(func, "__kwdefaults__", None) or {}
    positional = names[:argcount]
    first_default = argcount - len(defaults)
    has_default = {name: (defaults[i - first_default],) for i, name in enumerate(positional) if i >= first_default}
    keyword = list(positional[max(posonly, 1 if skip_first else 0) :]) + list(names[argcount : argcount + kwonly])
    has_default.update({name: (value,) for name, value in kwdefaults.items()})
    properties: Schema = {}
    required = []
    for name in keyword:
        prop = _to_schema(hints[name], 0) if name in hints else {}
        if name in docs:
            prop = {**prop, "description": docs[name]}
        if name in has_default:
            default = has_default[name][0]
            if _is_plain_json(default):
                prop = {**prop, "default": default}
        else:
            required.append(name)
        properties[name] = prop
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if flags & _CO_VARKEYWORDS:
        extra = names[argcount + kwonly + (1 if flags & _CO_VARARGS else 0)]
        schema["additionalProperties"] = _to_schema(hints[extra], 0) if extra in hints else True
    else:
        schema["additionalProperties"] = False
    return schema


def _hints(func: object) -> dict[str, object]:
    """The function's annotations, evaluated; one that cannot be is left out (``{}``)."""
    raw = getattr(func, "__annotations__", None)
    if not isinstance(raw, dict):
        return {}
    scope = getattr(func, "__globals__", None)
    return {name: value for name, value in ((n, _evaluate(a, scope)) for n, a in raw.items()) if value is not _UNREADABLE}


_UNREADABLE: Final = object()


def _evaluate(annotation: object, scope: object) -> object:
    typing = sys.modules.get("typing")
    if typing is not None and isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if not isinstance(annotation, str):
        return annotation
    if not isinstance(scope, dict):
        return _UNREADABLE
    try:
        value = eval(annotation, scope)  # noqa: S307 (the plugin's own annotation, in its own module)
        # A quoted hint under `from __future__ import annotations` is a string twice over.
        return eval(value, scope) if isinstance(value, str) else value  # noqa: S307
    except Exception:
        return _UNREADABLE


def _to_schema(tp: object, depth: int) -> Schema:
    """The schema of type hint ``tp`` (``{}`` when it has none)."""
    if depth > MAX_DEPTH:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type):
        if tp in _SCALARS:
            return {"type": _SCALARS[tp]}
        if tp in _BYTES:
            return {"contentMediaType": BINARY}
        if tp is list or tp is tuple or tp is set or tp is frozenset:
            return {"type": "array"}
        if tp is dict:
            return {"type": "object"}
        if issubclass(tp, dict) and isinstance(getattr(tp, "__required_keys__", None), frozenset):
            return _typed_dict(tp, depth)
        return {}
    metadata = getattr(tp, "__metadata__", None)
    origin = getattr(tp, "__origin__", None)
    if metadata is not None and origin is not None:  # Annotated[T, ...]
        return _to_schema(origin, depth)
    args = getattr(tp, "__args__", None)
    args = args if isinstance(args, tuple) else ()
    typing = sys.modules.get("typing")
    if type(tp).__name__ == "UnionType" or (typing is not None and origin is typing.Union):
        return _union([_to_schema(a, depth + 1) for a in args])
    if typing is not None and origin is typing.Literal:
        values = [a for a in args if _is_plain_json(a)]
        return {"enum": values} if len(values) == len(args) <= MAX_ENUM_ITEMS else {}
    return _generic(origin, args, depth)


def _generic(origin: object, args: tuple[object, ...], depth: int) -> Schema:
    """``list[T]``, ``tuple[...]``, ``set[T]``, ``dict[str, T]`` (and their ``typing`` and
    ``collections.abc`` spellings)."""
    name = getattr(origin, "__name__", "")
    if origin in (list, set, frozenset) or name in ("Sequence", "MutableSequence", "Iterable", "Collection"):
        items = _to_schema(args[0], depth + 1) if args else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            items = _to_schema(args[0], depth + 1)
            return {"type": "array", "items": items} if items else {"type": "array"}
        if args == ((),) or not args:
            return {"type": "array", "maxItems": 0} if args else {"type": "array"}
        return {"type": "array", "minItems": len(args), "maxItems": len(args)}
    if origin is dict or name in ("Mapping", "MutableMapping"):
        values = _to_schema(args[1], depth + 1) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": values} if values else {"type": "object"}
    return {}


def _union(members: list[Schema]) -> Schema:
    """``anyOf`` the members, or one ``type`` list when every member is only a type."""
    if any(m == {} for m in members) or len(members) > MAX_ANY_OF:
        return {}
    if all(m.keys() == {"type"} and isinstance(m["type"], str) for m in members):
        types: list[object] = []
        for m in members:
            if m["type"] not in types:
                types.append(m["type"])
        return {"type": types[0] if len(types) == 1 else types}
    return {"anyOf": members}


def _typed_dict(tp: type, depth: int) -> Schema:
    hints = _class_hints(tp)
    required_keys = getattr(tp, "__required_keys__", frozenset())
    properties = {key: _to_schema(hint, depth + 1) for key, hint in hints.items()}
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [key for key in properties if key in required_keys]
    if required:
        schema["required"] = required
    return schema


def _class_hints(tp: type) -> dict[str, object]:
    typing = sys.modules.get("typing")
    if typing is not None:
        try:
            return dict(typing.get_type_hints(tp))
        except Exception:
            pass
    scope = getattr(sys.modules.get(getattr(tp, "__module__", ""), None), "__dict__", None)
    raw = getattr(tp, "__annotations__", None) or {}
    return {key: value for key, value in ((k, _evaluate(a, scope)) for k, a in raw.items()) if value is not _UNREADABLE}


def _is_plain_json(value: object) -> bool:
    """A JSON scalar that round-trips exactly: ``None``, a bool, an int, a finite float, a str."""
    if value is None or type(value) in (bool, int, str):
        return True
    return type(value) is float and value == value and value not in (float("inf"), float("-inf"))


def _parse_doc(doc: str) -> tuple[str, dict[str, str]]:
    """The docstring's first paragraph (one line) and the descriptions of its ``Args:``
    section (Google style) or ``:param name:`` lines (Sphinx style)."""
    lines = [line.rstrip() for line in doc.expandtabs().splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    summary = []
    for line in lines:
        if not line.strip():
            break
        summary.append(line.strip())
    return _clip(" ".join(summary)), _arg_docs(lines)


def _arg_docs(lines: list[str]) -> dict[str, str]:
    docs: dict[str, str] = {}
    section_indent = -1  # inside an Args: section, the indent of its heading
    current, entry_indent = None, 0  # the entry being read, and its indent
    for line in lines:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if text.startswith(":param "):  # Sphinx: `:param name: text` or `:param int name: text`
            head, _, rest = text[7:].partition(":")
            current = head.split()[-1] if head.split() else None
            if current:
                docs[current] = rest.strip()
            continue
        if text.lower() in _ARGS_HEADINGS:
            section_indent, current = indent, None
            continue
        if section_indent < 0 or not text:
            continue
        if indent <= section_indent:  # the section ended
            section_indent, current = -1, None
            continue
        head, colon, rest = text.partition(":")
        name = head.split(" (")[0].strip().lstrip("*")
        if colon and name.isidentifier() and (current is None or indent <= entry_indent):
            current, entry_indent = name, indent
            docs[name] = rest.strip()
        elif current is not None:
            docs[current] = f"{docs[current]} {text}".strip()
    return {name: _clip(text) for name, text in docs.items() if text}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION_CHARS else text[: MAX_DESCRIPTION_CHARS - 3] + "..."
