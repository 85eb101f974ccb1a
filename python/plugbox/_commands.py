"""The command registry behind ``@plugbox.command``, and running one command for a host call."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Final, TypeVar, overload

    _F = TypeVar("_F", bound=Callable[..., object])
    # A reply to a host->plugin call: the header's type, the fields to add to it, the body.
    Reply = tuple[str, dict[str, object], bytes]
else:

    def overload(func):  # typing.overload is a no-op at runtime; `typing` costs import time
        return func


MAX_COMMANDS: Final = 256  # protocol.md §3.1
MAX_NAME_CHARS: Final = 64
_NAME_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_CO_ASYNC: Final = 0x80 | 0x200  # CO_COROUTINE | CO_ASYNC_GENERATOR, without `inspect`
BUILTIN_PREFIX: Final = "plugbox."  # names the SDK answers itself (protocol.md §6)


def check_command_name(name: object) -> str:
    """Return ``name`` if it is a valid command name (``[A-Za-z0-9_.-]{1,64}``), else raise."""
    if not isinstance(name, str):
        raise TypeError(f"command name must be str, not {type(name).__name__}")
    if not 0 < len(name) <= MAX_NAME_CHARS or not _NAME_CHARS.issuperset(name):
        raise ValueError(
            f"invalid command name {name!r}: use 1 to {MAX_NAME_CHARS} characters "
            "from A-Z a-z 0-9 _ . - (pass @command(name=...) to choose one)"
        )
    if name.startswith(BUILTIN_PREFIX):
        raise ValueError(f"invalid command name {name!r}: the {BUILTIN_PREFIX!r} prefix is reserved")
    return name


class Registry:
    """Exported commands by name, in registration order."""

    __slots__ = ("_commands",)

    def __init__(self) -> None:
        self._commands: dict[str, Callable[..., object]] = {}

    def add(self, name: str, func: Callable[..., object]) -> None:
        check_command_name(name)
        if not callable(func):
            raise TypeError(f"command {name!r} must be callable, not {type(func).__name__}")
        code = getattr(func, "__code__", None)
        if code is not None and code.co_flags & _CO_ASYNC:
            raise TypeError(f"command {name!r} is async: commands are plain functions (they run on threads)")
        existing = self._commands.get(name)
        if existing is not None and existing is not func:
            raise ValueError(f"command {name!r} is already registered (by {existing!r})")
        if existing is None and len(self._commands) >= MAX_COMMANDS:
            raise ValueError(f"cannot register {name!r}: at most {MAX_COMMANDS} commands")
        self._commands[name] = func

    def get(self, name: str) -> Callable[..., object] | None:
        return self._commands.get(name)

    def remove(self, name: str) -> None:
        self._commands.pop(name, None)

    def names(self) -> list[str]:
        return list(self._commands)

    def schemas(self) -> dict[str, dict[str, object]]:
        """Each command's argument and result schemas (:mod:`plugbox._schema`), for ``hello``;
        a command whose signature cannot be read has none."""
        from ._schema import command_schema

        derived = ((name, command_schema(func)) for name, func in self._commands.items())
        return {name: schema for name, schema in derived if schema is not None}


REGISTRY: Final = Registry()


@overload
def command(func: _F, /) -> _F: ...
@overload
def command(*, name: str | None = None) -> Callable[[_F], _F]: ...  # noqa: F811 (see `overload`)
def command(  # noqa: F811 (`overload` is typing.overload, or its runtime stand-in above)
    func: Callable[..., object] | None = None, /, *, name: str | None = None
) -> Callable[..., object]:
    """Export a function as a plugin command the host can call.

    Use it bare (``@command``: the command is named after the function) or with a name
    (``@command(name="word-count")``). The host's ``args`` arrive as keyword arguments; the
    argument named by a call's ``body`` receives the frame's raw ``bytes``. Return a
    JSON-serialisable value, or ``bytes`` to answer with a binary body. The function is
    returned unchanged.
    """

    def register(target: Callable[..., object]) -> Callable[..., object]:
        REGISTRY.add(getattr(target, "__name__", "") if name is None else name, target)
        return target

    if func is None:
        return register
    if name is not None:
        raise TypeError("use @command or @command(name=...), not command(func, name=...)")
    return register(func)


# Error texts sent to the host are clipped so that an error reply always fits in a header.
MAX_ERROR_MESSAGE_CHARS: Final = 8 * 1024
MAX_TRACEBACK_CHARS: Final = 64 * 1024
_NO_COPY: Final = 1 << 20  # a memoryview result larger than this is sent as is, not copied


def run_command(method: str, func: Callable[..., object], args: dict[str, object]) -> Reply:
    """Run ``func(**args)`` and describe the reply frame. Never raises."""
    try:
        value = func(**args)
    except TypeError as exc:
        # Raised by the call itself (no frame inside the function): the arguments do not fit
        # the command's signature. That is the caller's error, not the command's.
        tb = exc.__traceback__
        if tb is not None and tb.tb_next is None:
            return error_reply("invalid", f"bad arguments for command {method!r}: {exc}")
        return _plugin_error(exc)
    except BaseException as exc:  # a worker reports everything, SystemExit included
        return _plugin_error(exc)
    if isinstance(value, (bytes, bytearray, memoryview)):
        if type(value) is memoryview and value.c_contiguous and value.nbytes > _NO_COPY:
            return ("result", {"body": True}, value.cast("B"))  # a bulk argument: no copy
        return ("result", {"body": True}, bytes(value))
    return ("result", {"result": value}, b"")


def error_reply(code: str, message: str, traceback: str | None = None) -> Reply:
    error: dict[str, object] = {"code": code, "message": clip(message, MAX_ERROR_MESSAGE_CHARS)}
    if traceback is not None:
        error["traceback"] = clip(traceback, MAX_TRACEBACK_CHARS)
    return ("error", {"error": error}, b"")


def _plugin_error(exc: BaseException) -> Reply:
    import traceback  # lazily: about 10 ms, paid only when a command fails

    try:
        text = str(exc)
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except Exception:  # an exception whose __str__ raises
        text, formatted = "<exception str() failed>", None
    message = type(exc).__name__ + (f": {text}" if text else "")
    return error_reply("plugin_error", message, formatted)


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, with a marker saying how much was cut."""
    if len(text) <= limit:
        return text
    marker = f"...[truncated, {len(text)} characters in all]"
    return text[: limit - len(marker)] + marker
