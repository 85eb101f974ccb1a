"""ns-hello: greets, from the plugbox_plugins namespace."""
import plugbox


@plugbox.command
def greet(name: str = "world") -> str:
    return f"hello from the namespace, {name}"
