"""Unit tests of {{name}}'s commands, in-process and outside the sandbox, against the fake host
of `plugbox.testing` (the `plugbox_host` fixture). Run: `python3 -m pytest -q tests`."""

from pathlib import Path

import pytest

import plugbox

pytest_plugins = ["plugbox.testing"]  # not needed once the plugbox package is pip-installed

PLUGIN_DIR = Path(__file__).resolve().parent.parent


def test_greet(plugbox_host):
    plugbox_host.load(PLUGIN_DIR)
    plugbox_host.stub("log")  # record log lines as calls (else they go to stderr)
    assert plugbox_host.call("greet", name="Ada") == "Hello, Ada!"
    (line,) = plugbox_host.calls_to("log")
    assert line.args["fields"] == {"name": "Ada"}


def test_greet_user_asks_the_host(plugbox_host):
    plugbox_host.load(PLUGIN_DIR)
    plugbox_host.stub("app.user", "Grace")
    assert plugbox_host.call("greet_user") == "Hello, Grace!"
    assert [call.method for call in plugbox_host.calls] == ["app.user"]


def test_greet_user_without_the_capability_is_denied(plugbox_host):
    plugbox_host.load(PLUGIN_DIR)
    with pytest.raises(plugbox.CapabilityDenied):
        plugbox_host.call("greet_user")
