from __future__ import annotations

from collections.abc import Iterator

import pytest

import plugbox
from plugbox._commands import MAX_COMMANDS, REGISTRY, Registry, run_command


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = REGISTRY.names()
    yield
    for name in REGISTRY.names():
        if name not in before:
            REGISTRY.remove(name)


def test_bare_and_named_decorator(clean_registry: None) -> None:
    @plugbox.command
    def count(text: str) -> int:
        return len(text.split())

    @plugbox.command(name="word-stats")
    def stats(text: str) -> dict[str, int]:
        return {"chars": len(text)}

    assert count("a b") == 2  # returned unchanged
    assert REGISTRY.get("count") is count
    assert REGISTRY.get("word-stats") is stats
    assert REGISTRY.names()[-2:] == ["count", "word-stats"]


@pytest.mark.parametrize("name", ["", "a" * 65, "has space", "naïve", "plugbox.ping", "plugbox.x", "a/b"])
def test_invalid_names_are_refused_at_decoration(name: str, clean_registry: None) -> None:
    with pytest.raises(ValueError, match="invalid command name"):
        plugbox.command(name=name)(lambda: None)


def test_lambda_needs_a_name_and_duplicates_are_refused() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match="'<lambda>'"):
        registry.add((lambda: None).__name__, lambda: None)

    def a() -> None: ...

    def b() -> None: ...

    registry.add("x" * 64, a)
    registry.add("x" * 64, a)  # same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        registry.add("x" * 64, b)


def test_at_most_256_commands() -> None:
    registry = Registry()
    for i in range(MAX_COMMANDS):
        registry.add(f"c{i}", print)
    with pytest.raises(ValueError, match="at most 256"):
        registry.add("one-more", print)


def test_run_command_outcomes() -> None:
    def echo(**kwargs: object) -> object:
        return kwargs

    def raw(data: bytes) -> bytes:
        return data[::-1]

    def needs_x(x: int) -> int:
        return x

    def fails() -> None:
        raise KeyError("missing")

    def type_error_inside() -> None:
        raise TypeError("inner")

    assert run_command("echo", echo, {"a": 1}) == ("result", {"result": {"a": 1}}, b"")
    assert run_command("raw", raw, {"data": b"abc"}) == ("result", {"body": True}, b"cba")
    kind, fields, _ = run_command("needs_x", needs_x, {"y": 1})
    assert kind == "error" and fields["error"]["code"] == "invalid"  # type: ignore[index]
    assert "unexpected keyword argument 'y'" in fields["error"]["message"]  # type: ignore[index]
    kind, fields, _ = run_command("fails", fails, {})
    error = fields["error"]
    assert error["code"] == "plugin_error" and error["message"] == "KeyError: 'missing'"  # type: ignore[index]
    assert 'raise KeyError("missing")' in error["traceback"]  # type: ignore[index]
    _, fields, _ = run_command("t", type_error_inside, {})
    assert fields["error"]["code"] == "plugin_error"  # type: ignore[index]
    assert fields["error"]["message"] == "TypeError: inner"  # type: ignore[index]


def test_async_commands_are_refused() -> None:
    async def fetch() -> None: ...

    with pytest.raises(TypeError, match="is async"):
        Registry().add("fetch", fetch)
