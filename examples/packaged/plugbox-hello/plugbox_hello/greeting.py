"""A sibling module of main.py, to show how a packaged plugin imports its own code."""


def greeting(name: str) -> str:
    return f"hello, {name}"
