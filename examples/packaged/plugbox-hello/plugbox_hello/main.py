"""hello: greets. Runs in the sandbox as a plain script, not as part of the package."""
import plugbox

# The engine puts this file's directory first on sys.path: import sibling modules as
# top-level modules (`import greeting`), never as `plugbox_hello.greeting` or `from . import`.
from greeting import greeting


@plugbox.command
def greet(name: str = "world") -> str:
    plugbox.log.info("greeting", name=name)
    return greeting(name)
