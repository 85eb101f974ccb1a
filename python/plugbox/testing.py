"""A fake host for unit-testing a plugin's commands in-process, outside the sandbox.

In a pytest suite, the ``plugbox_host`` fixture gives a :class:`FakeHost`::

    pytest_plugins = ["plugbox.testing"]  # not needed once the plugbox package is installed

    def test_title(plugbox_host):
        plugbox_host.load(PLUGIN_DIR)  # the directory holding plugbox.toml
        plugbox_host.stub("doc.get_text", "hello world")
        plugbox_host.stub("doc.set_text")  # answers None
        assert plugbox_host.call("apply") == 2
        assert plugbox_host.calls_to("doc.set_text")[0].args == {"text": "Hello World"}

What it does as the real host does:

- A call of a capability without a stub raises :class:`~plugbox.CapabilityDenied`, as the
  host's gate answers an ungranted call; the attempt is recorded in :attr:`FakeHost.calls`.
- Arguments and results cross a real protocol boundary: they are encoded by the SDK's own
  strict JSON codec and decoded again (a tuple comes back a list; NaN, a set or a lone
  surrogate fails as it would on the wire), and one ``bytes`` argument or result travels as a
  frame body.
- A stub may be a value or a callable, called with the call's keyword arguments. A callable
  that raises a :class:`~plugbox.PlugboxError` answers with its code (``denied``, ``invalid``,
  ...); any other exception answers ``host_error``, as a failing host handler does, and stays
  in :attr:`HostCall.exception`.
- With a manifest (``load(plugin_dir)``), a stub for a capability the manifest does not request
  is refused (``ValueError``): the real host could never answer it.

What it does differently, on purpose: commands run in the test's own thread, and an exception a
command raises propagates to the test unchanged (the real host would receive it as a
``plugin_error`` reply with the traceback). There is no sandbox, no audit log, no limits: check
those with ``plugbox run --stub CAP=JSON`` (see ``docs/authoring.md``).

This module uses the standard library only; the fixture exists when pytest is running.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from . import _channel
from ._calls import Outgoing
from ._commands import REGISTRY, Registry
from ._errors import EXCEPTION_BY_CODE, InvalidArgument, PlugboxError, error_from_wire
from ._strict_json import encode_value, loads, to_utf8

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any, Callable, Final

__all__ = ["FakeHost", "HostCall"]

MAX_IN_FLIGHT: Final = 16
MANIFEST_NAME: Final = "plugbox.toml"
_UNSET: Final = object()


class HostCall:
    """One call the plugin made to the host, in the order made.

    Attributes:
        method: the capability called.
        args: its keyword arguments as the host received them (a body argument as ``bytes``).
        result: what the stub answered (``None`` for a failed call).
        error: the error the plugin received, or ``None``.
        exception: the exception a callable stub raised, if it raised something other than a
            :class:`~plugbox.PlugboxError` (the plugin received ``host_error``).
        stubbed: whether a stub answered (``False``: denied, no stub).
    """

    __slots__ = ("args", "error", "exception", "method", "result", "stubbed")

    def __init__(self, method: str, args: dict[str, Any]) -> None:
        self.method = method
        self.args = args
        self.result: Any = None
        self.error: PlugboxError | None = None
        self.exception: BaseException | None = None
        self.stubbed = False

    def __repr__(self) -> str:
        outcome = f"error={self.error!r}" if self.error is not None else f"result={self.result!r}"
        return f"HostCall({self.method!r}, {self.args!r}, {outcome})"


class _FakeChannel:
    """What ``plugbox.host`` and ``plugbox.log`` use of a channel: its ``outgoing`` calls."""

    def __init__(self, outgoing: Outgoing) -> None:
        self.outgoing = outgoing


class FakeHost:
    """A host in the test's own process: stubs capabilities, records calls, runs commands.

    While it is active (from construction to :meth:`close`), ``plugbox.host.call`` and
    ``plugbox.log`` in this process talk to it. Use one at a time.
    """

    def __init__(self) -> None:
        self._stubs: dict[str, object] = {}
        self._lock = threading.Lock()
        self.calls: list[HostCall] = []
        self.name = "plugin"
        self.requested: frozenset[str] | None = None  # from the manifest, once loaded
        self._commands: Registry | None = None
        self._sys_path: str | None = None
        self._module: str | None = None  # the entry's name in sys.modules, once loaded
        self._outgoing = Outgoing(self._on_frame, self._on_control)
        self._outgoing.configure(frozenset(), MAX_IN_FLIGHT)
        self._previous = _channel.active()
        _channel.activate(_FakeChannel(self._outgoing))  # type: ignore[arg-type]

    # -- stubs ---------------------------------------------------------------------------------

    def stub(self, capability: str, value: object = None) -> None:
        """Answer ``capability`` with ``value``, or with ``value(**args)`` when it is callable.

        Raises ``ValueError`` when a loaded manifest does not request ``capability``.
        """
        self._check_requested(capability)
        with self._lock:
            self._stubs[capability] = value
            self._outgoing.capabilities = frozenset(self._stubs)

    def unstub(self, capability: str) -> None:
        """Remove the stub of ``capability``: its calls are denied again."""
        with self._lock:
            self._stubs.pop(capability, None)
            self._outgoing.capabilities = frozenset(self._stubs)

    def calls_to(self, method: str) -> list[HostCall]:
        """The recorded calls of ``method``, in order."""
        with self._lock:
            return [call for call in self.calls if call.method == method]

    def _check_requested(self, capability: str) -> None:
        if self.requested is not None and capability not in self.requested:
            raise ValueError(
                f"cannot stub {capability!r}: the manifest of {self.name!r} does not request it "
                f"(it requests {sorted(self.requested)}); a real host could never answer it"
            )

    # -- the plugin ----------------------------------------------------------------------------

    def load(self, path: str | Path) -> None:
        """Execute the plugin's entry file and take the commands it registers.

        ``path`` is the plugin directory (its ``plugbox.toml`` names the entry file and the
        capabilities requested; needs Python 3.11's ``tomllib``) or the entry file itself.
        The entry's directory goes first on ``sys.path`` until :meth:`close`, as in the
        sandbox. Without ``load``, :meth:`call` runs commands registered by importing the
        plugin's module yourself.
        """
        if self._commands is not None:
            raise RuntimeError("this FakeHost has loaded a plugin already; use a new one")
        path = Path(path).resolve()
        entry = self._read_manifest(path) if path.is_dir() else path
        for capability in self._stubs:
            self._check_requested(capability)
        self._sys_path = str(entry.parent)
        sys.path.insert(0, self._sys_path)
        self._module = f"__plugbox_test_{self.name.replace('-', '_')}__"
        self._commands = _execute_entry(entry, self._module)

    def _read_manifest(self, plugin_dir: Path) -> Path:
        try:
            import tomllib
        except ImportError:  # Python < 3.11
            raise RuntimeError(
                "reading plugbox.toml needs Python 3.11 (tomllib): pass the entry file instead"
            ) from None
        with open(plugin_dir / MANIFEST_NAME, "rb") as file:
            manifest = tomllib.load(file)
        plugin = manifest["plugin"]
        self.name = str(plugin["name"])
        self.requested = frozenset(manifest.get("capabilities", {}))
        return plugin_dir / str(plugin["entry"])

    @property
    def commands(self) -> list[str]:
        """The names of the commands :meth:`call` can run."""
        return (self._commands or REGISTRY).names()

    def call(self, command: str, /, **args: Any) -> Any:
        """Run ``command`` with ``args`` here, in this thread, and return its result.

        ``args`` go through strict JSON as the host's would (one ``bytes`` argument travels as
        the body); the result comes back as the host would receive it (``bytes`` for a body).
        An unknown command raises :class:`~plugbox.InvalidArgument`, a result JSON cannot hold
        raises :class:`~plugbox.PlugboxError` (``plugin_error``), and whatever the command
        raises propagates unchanged.
        """
        func = (self._commands or REGISTRY).get(command)
        if func is None:
            raise InvalidArgument(f"{self.name} exports no command {command!r}", method=command)
        value = func(**_over_the_wire(command, args))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        try:
            return loads(to_utf8(encode_value(value, 2)))
        except (TypeError, ValueError) as exc:
            raise PlugboxError(
                f"command {command!r} returned a value that is not JSON-serialisable: "
                f"{type(exc).__name__}: {exc}",
                method=command,
            ) from None

    def close(self) -> None:
        """Stop being the host: restore the previous channel (if any) and ``sys.path``."""
        if getattr(_channel.active(), "outgoing", None) is self._outgoing:
            _channel.activate(self._previous)
        if self._module is not None:
            sys.modules.pop(self._module, None)
            self._module = None
        if self._sys_path is not None:
            try:
                sys.path.remove(self._sys_path)
            except ValueError:
                pass
            self._sys_path = None

    def __enter__(self) -> FakeHost:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the host's side of the wire -----------------------------------------------------------

    def _on_frame(self, raw_header: bytes, body: bytes) -> None:
        """A call frame from the SDK: answer it at once, as the host's reply would."""
        header = loads(raw_header)
        assert isinstance(header, dict) and header["type"] == "call", header
        call_id, method = header["id"], header["method"]
        args = dict(header["args"])
        if "body" in header:
            args[header["body"]] = body
        call = HostCall(method, args)
        with self._lock:
            self.calls.append(call)
            stub = self._stubs.get(method, _UNSET)
        fields, reply_body = self._answer(call, stub)
        self._outgoing.on_reply({"id": call_id, **fields}, reply_body)

    def _answer(self, call: HostCall, stub: object) -> tuple[dict[str, object], bytes]:
        if stub is _UNSET:
            return self._fail(call, "denied", f"capability {json.dumps(call.method)} is not granted")
        call.stubbed = True
        try:
            value = stub(**call.args) if callable(stub) else stub
        except PlugboxError as exc:
            return self._fail(call, exc.code, exc.message)
        except Exception as exc:
            call.exception = exc
            return self._fail(call, "host_error", f"stub for {call.method!r} raised {type(exc).__name__}: {exc}")
        if isinstance(value, (bytes, bytearray, memoryview)):
            call.result = bytes(value)
            return {"type": "result", "body": True}, bytes(value)
        try:
            call.result = loads(to_utf8(encode_value(value, 2)))
        except (TypeError, ValueError) as exc:
            return self._fail(call, "host_error", f"stub for {call.method!r}: result is not JSON: {exc}")
        return {"type": "result", "result": call.result}, b""

    @staticmethod
    def _fail(call: HostCall, code: str, message: str) -> tuple[dict[str, object], bytes]:
        if code not in EXCEPTION_BY_CODE:  # a PlugboxError made with a code of its own
            code, message = "host_error", f"stub for {call.method!r} raised code {code!r}: {message}"
        call.error = error_from_wire(code, message, method=call.method)
        return {"type": "error", "error": {"code": code, "message": message}}, b""

    def _on_control(
        self, header: dict[str, object], body: bytes, default: Callable[[object], object] | None
    ) -> None:
        """A frame other than a call (a ``cancel`` after a timeout): every call is answered
        before it returns, so there is nothing to cancel."""


def _over_the_wire(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as the plugin would receive them from a host: through strict JSON, with at
    most one ``bytes`` value as the body."""
    body = {name: bytes(v) for name, v in args.items() if isinstance(v, (bytes, bytearray, memoryview))}
    if len(body) > 1:
        raise InvalidArgument(f"only one bytes argument can travel as the body, not {sorted(body)}")
    rest = {name: value for name, value in args.items() if name not in body}
    try:
        decoded = loads(to_utf8(encode_value(rest, 2)))
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"arguments cannot be sent as JSON: {exc}", method=command) from None
    assert isinstance(decoded, dict)
    decoded.update(body)
    return decoded


def _execute_entry(entry: Path, module_name: str) -> Registry:
    """Run ``entry`` as a fresh module ``module_name`` (in ``sys.modules``, as the runtime puts
    it, for dataclasses and pickling) and return the commands it registered; the global
    registry is left as it was, so several plugins, or one loaded twice, do not collide."""
    saved = dict(REGISTRY._commands)
    REGISTRY._commands.clear()
    try:
        module = type(sys)(module_name)
        module.__file__ = str(entry)
        sys.modules[module_name] = module
        code = compile(entry.read_bytes(), str(entry), "exec")
        exec(code, module.__dict__)
        registered = Registry()
        for command in REGISTRY.names():
            func = REGISTRY.get(command)
            assert func is not None
            registered.add(command, func)
        return registered
    finally:
        REGISTRY._commands.clear()
        REGISTRY._commands.update(saved)


if "pytest" in sys.modules:  # loaded as a pytest plugin: define the fixture
    import pytest

    __all__ += ["plugbox_host"]

    @pytest.fixture
    def plugbox_host() -> Iterator[FakeHost]:
        """A :class:`FakeHost`, active for the test and closed after it."""
        host = FakeHost()
        try:
            yield host
        finally:
            host.close()
