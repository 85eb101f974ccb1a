"""plugbox: the Python SDK for plugins that run in the plugbox sandbox.

A plugin exports commands with :func:`command`, calls the host's capabilities with
:func:`plugbox.host.call`, and logs with :mod:`plugbox.log`. The wire protocol is
``docs/protocol.md`` (version 1) in the plugbox repository.
"""

from __future__ import annotations

from . import host, log
from ._commands import command
from ._errors import (
    Cancelled,
    CapabilityDenied,
    HostError,
    InvalidArgument,
    LimitExceeded,
    PlugboxError,
    PluginCrashed,
    ProtocolError,
    Timeout,
    Unavailable,
)

__all__ = [
    "Cancelled",
    "CapabilityDenied",
    "HostError",
    "InvalidArgument",
    "LimitExceeded",
    "PlugboxError",
    "PluginCrashed",
    "ProtocolError",
    "Timeout",
    "Unavailable",
    "command",
    "host",
    "log",
]

__version__ = "0.1.0"
