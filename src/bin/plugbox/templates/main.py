"""{{name}}: a plugbox plugin (made by `plugbox new`; replace these two commands with yours)."""

import plugbox


@plugbox.command
def greet(name: str = "world") -> str:
    """Returns a greeting for `name`."""
    plugbox.log.info("greeting", name=name)
    return f"Hello, {name}!"


@plugbox.command
def greet_user() -> str:
    """Greets the application's user, whose name the host's `app.user` capability gives."""
    return greet(plugbox.host.call("app.user"))
