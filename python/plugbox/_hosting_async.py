"""The asyncio face of :class:`plugbox.hosting.Engine`: the same serve process, reader thread
and line handling; each request's answer settles an asyncio future on the caller's loop
(``call_soon_threadsafe``), so nothing polls."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Dict, List, Mapping, Optional, Sequence

from ._hosting_types import Discovered, Event

if TYPE_CHECKING:
    from .hosting import Engine, PathLike


class AsyncEngine:
    """``async with AsyncEngine(audit=..., state=...) as engine: await engine.call(...)``.

    Takes :class:`~plugbox.hosting.Engine`'s arguments. A capability may be a coroutine
    function: it then runs on this event loop. ``on_event`` callbacks run on the engine's event
    thread; :meth:`events` yields events on the loop.
    """

    def __init__(self, *, capabilities: Optional[Mapping[str, Callable[..., Any]]] = None, **kwargs: Any) -> None:
        from .hosting import Engine

        self._caps = dict(capabilities or {})
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        wrapped = {name: self._wrap(fn) for name, fn in self._caps.items()}
        self.engine: Engine = Engine(capabilities=wrapped, **kwargs)

    def _wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            return fn

        @functools.wraps(fn)
        def on_loop(*args: Any, **kwargs: Any) -> Any:
            assert self._loop is not None
            return asyncio.run_coroutine_threadsafe(fn(*args, **kwargs), self._loop).result()

        return on_loop

    async def start(self) -> AsyncEngine:
        """Starts serve and waits for its ready line (off the loop)."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(None, self.engine.start)
        return self

    async def __aenter__(self) -> AsyncEngine:
        return await self.start()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._loop is not None
        await self._loop.run_in_executor(None, self.engine.__exit__, exc_type, exc, tb)

    async def close(self) -> None:
        """Shuts serve down and waits for it to exit 0 (the audit log sealed)."""
        await asyncio.get_running_loop().run_in_executor(None, self.engine.close)

    async def _request(self, request: Dict[str, Any], method: Optional[str] = None) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Dict[str, Any]] = loop.create_future()

        def settle(answer: Dict[str, Any]) -> None:
            loop.call_soon_threadsafe(_set, future, answer)

        self.engine.submit(request, settle)
        answer = await future
        return self.engine.result(answer, method)

    async def load(self, dir: PathLike, grant: Optional[PathLike] = None) -> Dict[str, Any]:
        """See :meth:`Engine.load`."""
        req: Dict[str, Any] = {"op": "load", "dir": os.fspath(dir)}
        if grant is not None:
            req["grant"] = os.fspath(grant)
        return await self._request(req)  # type: ignore[no-any-return]

    async def describe(self, plugin: str) -> Dict[str, Any]:
        """See :meth:`Engine.describe`."""
        return await self._request({"op": "describe", "plugin": plugin})  # type: ignore[no-any-return]

    async def call(self, plugin: str, command: str, args: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> Any:
        """See :meth:`Engine.call`."""
        merged = {**args, **kwargs} if args else kwargs
        request = {"op": "call", "plugin": plugin, "command": command, "args": merged}
        return await self._request(request, f"{plugin}.{command}")

    async def reload(self, plugin: str, dir: PathLike, grant: Optional[PathLike] = None) -> Dict[str, Any]:
        """See :meth:`Engine.reload`."""
        req: Dict[str, Any] = {"op": "reload", "plugin": plugin, "dir": os.fspath(dir)}
        if grant is not None:
            req["grant"] = os.fspath(grant)
        return await self._request(req)  # type: ignore[no-any-return]

    async def unload(self, plugin: str) -> None:
        """See :meth:`Engine.unload`."""
        await self._request({"op": "unload", "plugin": plugin})

    async def stats(self) -> Any:
        """See :meth:`Engine.stats`."""
        return await self._request({"op": "stats"})

    async def discover(self, **kwargs: Any) -> List[Discovered]:
        """See :func:`plugbox.hosting.discover` (run off the loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(self.engine.discover, **kwargs))

    def on_event(self, callback: Callable[[Event], Any]) -> None:
        """See :meth:`Engine.on_event`."""
        self.engine.on_event(callback)

    def events(self) -> AsyncIterator[Event]:
        """Every event from this call on, on the running loop, until the engine closes:
        ``async for event in engine.events()``."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Optional[Event]] = asyncio.Queue()
        self.engine.subscribe(lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
        return _drain(queue)


async def _drain(queue: asyncio.Queue[Optional[Event]]) -> AsyncIterator[Event]:
    while True:
        event = await queue.get()
        if event is None:
            return
        yield event


def _set(future: asyncio.Future[Dict[str, Any]], answer: Dict[str, Any]) -> None:
    if not future.done():  # the caller may have been cancelled
        future.set_result(answer)


__all__: Sequence[str] = ["AsyncEngine"]
