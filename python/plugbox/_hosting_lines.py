"""Reading serve's stdout: whoever waits for an answer reads it (leader/follower).

A caller blocked on its answer takes the *reading role* and reads serve's lines itself,
routing the answers of other callers, events and host calls as they come; when its own answer
arrives it hands the role on. Once no caller has read for ``IDLE_AFTER`` (2 ms), a background
thread watches the pipe (without the role) and, when lines come between requests (events,
host calls, answers of asyncio callers), takes the role to read what is there. A synchronous
call therefore costs no thread hand-off (the caller reads its own answer), and back-to-back
calls do not wake the background thread on every answer; while callers are active it wakes
every 2 ms at most (a timed wait, no spinning), and a line that comes right after a caller
finished waits at most that long.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any, Callable, Dict, List, Optional

Answer = Dict[str, Any]

#: After a caller last held the reading role, the background reader waits this long (seconds)
#: before it watches the pipe again, so that back-to-back calls do not wake it on every answer.
#: Lines that come meanwhile wait in the pipe at most this long.
IDLE_AFTER = 0.002


class Slot:
    """Where one synchronous caller's answer lands."""

    __slots__ = ("answer",)

    def __init__(self) -> None:
        self.answer: Optional[Answer] = None


class LineRouter:
    """Owns serve's stdout fd. ``route(line)`` handles one complete line (settling slots with
    :meth:`settle`, which callers wait on in :meth:`wait`)."""

    def __init__(self, fd: int, route: Callable[[bytes], None], on_eof: Callable[[], None]) -> None:
        self._fd = fd
        self._route = route
        self._on_eof = on_eof
        self._buf = b""
        lock = threading.Lock()
        self._cv = threading.Condition(lock)  # callers wait here
        self._bg_cv = threading.Condition(lock)  # the background reader waits here
        self._last_release = 0.0
        self._busy = False  # someone holds the reading role
        self._want = 0  # callers waiting for the role
        self.eof = False

    def settle(self, slot: Slot, answer: Answer) -> None:
        """Delivers ``answer`` to the caller waiting on ``slot``."""
        with self._cv:
            slot.answer = answer
            if self._want:
                self._cv.notify_all()

    def wait(self, slot: Slot) -> Answer:
        """Waits for ``slot``'s answer, reading serve's lines meanwhile when nobody else is."""
        with self._cv:
            self._want += 1
            while slot.answer is None and self._busy:
                self._cv.wait()
            self._want -= 1
            if slot.answer is not None:
                return slot.answer
            self._busy = True
        try:
            while slot.answer is None and self._read_once():
                pass
        finally:
            self._release()
        assert slot.answer is not None  # set by route, or by on_eof's failing of every caller
        return slot.answer

    def run_background(self) -> None:
        """The background reader: whenever no caller reads, reads what serve writes, until
        EOF. It waits for data without the role, so a caller never has to evict it."""
        while True:
            with self._cv:
                while not self.eof:
                    if self._busy or self._want:
                        self._bg_cv.wait(IDLE_AFTER)
                        continue
                    quiet = time.monotonic() - self._last_release
                    if quiet >= IDLE_AFTER:
                        break
                    self._bg_cv.wait(IDLE_AFTER - quiet)
                if self.eof:
                    return
            select.select([self._fd], [], [])
            with self._cv:
                if self._busy or self._want or self.eof:
                    continue
                self._busy = True
            try:
                # A caller may have read the data between the select and taking the role.
                if select.select([self._fd], [], [], 0)[0]:
                    self._read_once()
            finally:
                self._release(caller=False)

    def _release(self, caller: bool = True) -> None:
        with self._cv:
            self._busy = False
            if caller:
                self._last_release = time.monotonic()
            if self._want:  # callers waiting for the role or their answer (never the background)
                self._cv.notify_all()

    def _read_once(self) -> bool:
        """Reads what serve has (blocking), routes the complete lines. False at EOF."""
        data = os.read(self._fd, 1 << 16)
        if not data:
            with self._cv:
                self.eof = True
                self._cv.notify_all()
                self._bg_cv.notify_all()
            self._on_eof()
            return False
        lines: List[bytes] = (self._buf + data).split(b"\n")
        self._buf = lines.pop()
        for line in lines:
            self._route(line)
        return True
