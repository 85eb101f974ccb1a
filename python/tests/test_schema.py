"""Argument and result schemas derived from type hints and docstrings (plugbox._schema)."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from typing import Any, List, Literal, Optional, TypedDict, Union

import pytest

from plugbox._commands import Registry
from plugbox._schema import BINARY, MAX_DESCRIPTION_CHARS, command_schema


def args_of(func: object) -> dict[str, object]:
    schema = command_schema(func)  # type: ignore[arg-type]
    assert schema is not None
    return schema["args"]  # type: ignore[return-value]


def test_the_issue_example_with_a_default() -> None:
    def add(a: int, b: int = 1) -> int:
        """Add two numbers.

        Longer text that is not the description.
        """
        return a + b

    assert command_schema(add) == {
        "description": "Add two numbers.",
        "args": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 1}},
            "required": ["a"],
            "additionalProperties": False,
        },
        "result": {"type": "integer"},
    }


@pytest.mark.parametrize(
    ("hint", "schema"),
    [
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (str, {"type": "string"}),
        (bool, {"type": "boolean"}),
        (None, {"type": "null"}),
        (bytes, {"contentMediaType": BINARY}),
        (list[int], {"type": "array", "items": {"type": "integer"}}),
        (List[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array"}),
        (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
        (tuple[int, str], {"type": "array", "minItems": 2, "maxItems": 2}),
        (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
        (dict, {"type": "object"}),
        (int | None, {"type": ["integer", "null"]}),
        (Optional[str], {"type": ["string", "null"]}),
        (Union[int, str], {"type": ["integer", "string"]}),
        (list[int] | None, {"anyOf": [{"type": "array", "items": {"type": "integer"}}, {"type": "null"}]}),
        (Literal["a", "b", 3], {"enum": ["a", "b", 3]}),
        (Any, {}),
        (object, {}),
        (int | Any, {}),
    ],
)
def test_hints_map_to_the_subset(hint: object, schema: dict[str, object]) -> None:
    def f(x):  # type: ignore[no-untyped-def]
        return x

    f.__annotations__ = {"x": hint, "return": hint}
    derived = command_schema(f)
    assert derived is not None
    assert derived["args"]["properties"]["x"] == schema  # type: ignore[index]
    assert derived["result"] == schema


class Point(TypedDict):
    x: int
    y: int
    label: "str"


class Partial(TypedDict, total=False):
    name: str


def test_typed_dict_is_an_object_with_properties_and_required() -> None:
    def move(p: Point, extra: Partial) -> Point:
        return p

    props = args_of(move)["properties"]
    assert props["p"] == {  # type: ignore[index]
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "label": {"type": "string"}},
        "additionalProperties": False,
        "required": ["x", "y", "label"],
    }
    assert props["extra"] == {  # type: ignore[index]
        "type": "object",
        "properties": {"name": {"type": "string"}},
        "additionalProperties": False,
    }


class Tree(TypedDict):
    children: list[Tree]


def test_a_recursive_typed_dict_is_cut_to_any() -> None:
    def grow(t: Tree) -> None:
        return None

    text = json.dumps(args_of(grow))
    assert text.count('"children"') <= 10


def test_hints_past_the_hosts_bounds_are_any() -> None:
    def f(x: Literal[tuple(range(2000))], y: Union[tuple(Literal[i] for i in range(20))]):  # type: ignore[valid-type]
        return None

    # 2000 enum items (more than 1024); a union of 20 alternatives (more than 16 anyOf branches).
    props = args_of(f)["properties"]
    assert props["x"] == {}  # type: ignore[index]
    assert props["y"] == {}  # type: ignore[index]


def test_unannotated_keyword_only_kwargs_and_positional_only() -> None:
    def f(a, /, b, *args, c: str, d=2.5, **rest: int):  # type: ignore[no-untyped-def]
        return None

    assert args_of(f) == {
        "type": "object",
        "properties": {"b": {}, "c": {"type": "string"}, "d": {"default": 2.5}},
        "required": ["b", "c"],
        "additionalProperties": {"type": "integer"},
    }


def test_kwargs_without_a_hint_accept_anything_else() -> None:
    def f(**kw):  # type: ignore[no-untyped-def]
        return kw

    assert args_of(f) == {"type": "object", "properties": {}, "additionalProperties": True}


def test_defaults_that_are_not_plain_json_are_left_out() -> None:
    def f(a: list[int] | None = None, b: object = object(), c: float = float("nan")) -> None:
        return None

    props = args_of(f)["properties"]
    assert props["a"]["default"] is None  # type: ignore[index]
    assert "default" not in props["b"]  # type: ignore[operator]
    assert "default" not in props["c"]  # type: ignore[operator]
    assert "required" not in args_of(f)


def test_unresolvable_string_hints_are_any() -> None:
    def f(a: "NoSuchType", b: "int") -> "AlsoMissing":  # type: ignore[name-defined]  # noqa: F821
        return None

    schema = command_schema(f)
    assert schema is not None
    assert schema["args"]["properties"] == {"a": {}, "b": {"type": "integer"}}  # type: ignore[index]
    assert schema["result"] == {}


def test_google_and_sphinx_argument_descriptions() -> None:
    def google(n: int, text: str) -> None:
        """Count things.

        Args:
            n (int): how many
                of them.
            text: the text.

        Returns:
            nothing: really.
        """

    def sphinx(n: int) -> None:
        """Sphinx style.

        :param n: how many
        :returns: nothing
        """

    props = args_of(google)["properties"]
    assert props["n"]["description"] == "how many of them."  # type: ignore[index]
    assert props["text"]["description"] == "the text."  # type: ignore[index]
    assert "nothing" not in props  # type: ignore[operator]
    assert args_of(sphinx)["properties"]["n"]["description"] == "how many"  # type: ignore[index]


def test_long_descriptions_are_clipped() -> None:
    def f() -> None:
        pass

    f.__doc__ = "word " * 1000
    schema = command_schema(f)
    assert schema is not None
    assert len(schema["description"]) == MAX_DESCRIPTION_CHARS  # type: ignore[arg-type]


def test_wrapped_functions_and_bound_methods() -> None:
    def inner(a: int) -> int:
        """Inner."""
        return a

    @functools.wraps(inner)
    def outer(*args, **kwargs):  # type: ignore[no-untyped-def]
        return inner(*args, **kwargs)

    class Counter:
        def bump(self, by: int = 1) -> int:
            return by

    assert args_of(outer)["required"] == ["a"]
    assert args_of(Counter().bump)["properties"] == {"by": {"type": "integer", "default": 1}}


def test_callables_without_code_have_no_schema() -> None:
    class Callable:
        def __call__(self, a: int) -> int:
            return a

    assert command_schema(Callable()) is None
    assert command_schema(len) is None
    assert command_schema(functools.partial(lambda a, b: a, 1)) is None


def test_the_registry_sends_schemas_of_plain_functions_only() -> None:
    registry = Registry()

    def add(a: int, b: int = 1) -> int:
        return a + b

    registry.add("add", add)
    registry.add("len", len)
    assert list(registry.schemas()) == ["add"]
    json.dumps(registry.schemas(), allow_nan=False)  # strict JSON


def test_deriving_imports_neither_typing_nor_inspect() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from plugbox._commands import Registry;"
        "r = Registry()\n"
        "def add(a: int, b: 'list[str] | None' = None) -> int: return a\n"
        "r.add('add', add); s = r.schemas();"
        "assert 'anyOf' in s['add']['args']['properties']['b'], s;"
        "print(sorted({'typing', 'inspect'} & set(sys.modules)))"
    )
    sdk = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, sdk], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
