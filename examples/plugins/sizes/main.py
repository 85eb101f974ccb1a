"""Formats byte counts and durations for people, with humanize from the package index."""

import datetime

import humanize

import plugbox
from plugbox import log


@plugbox.command
def natural_sizes(sizes: list[int]) -> list[str]:
    """Each byte count as a person would write it (`1048576` -> `1.0 MiB`)."""
    out = [humanize.naturalsize(n, binary=True) for n in sizes]
    log.info("formatted", count=len(out))
    return out


@plugbox.command
def natural_delta(seconds: float) -> str:
    """A duration in words (`3700` -> `an hour`)."""
    return humanize.naturaldelta(datetime.timedelta(seconds=seconds))


@plugbox.command
def where() -> dict[str, str]:
    """Where humanize was imported from: the plugin's own environment."""
    return {"humanize": humanize.__file__, "version": humanize.__version__}
