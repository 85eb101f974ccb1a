"""notes: keeps short notes in the host's key-value store, and shows what the sandbox refuses."""
from pathlib import Path

import plugbox

# Files the plugin ships with are read directly: its own directory is readable in its sandbox.
HERE = Path(__file__).parent


@plugbox.command
def add(text: str) -> int:
    """Stores a note; returns how many notes there are."""
    keys = plugbox.host.call("kv.list", prefix="note:")
    plugbox.host.call("kv.set", key=f"note:{len(keys):04d}", value=text)
    plugbox.log.info("stored a note", length=len(text))
    return len(keys) + 1


@plugbox.command
def list_notes() -> list:
    """All notes, oldest first."""
    return [plugbox.host.call("kv.get", key=k) for k in plugbox.host.call("kv.list", prefix="note:")]


@plugbox.command
def greeting() -> str:
    """Reads a file it ships with, directly (no capability needed)."""
    return (HERE / "data" / "greeting.txt").read_text().strip()


@plugbox.command
def export() -> int:
    """Writes the notes to its data directory (kept by the host, outside its code) with fs.write."""
    text = "\n".join(list_notes()) + "\n"
    plugbox.host.call("fs.write", path="export/notes.txt", data=text.encode())
    return len(plugbox.host.call("fs.read", path="export/notes.txt"))


@plugbox.command
def probe_sandbox() -> dict:
    """Tries things the sandbox and the broker refuse, and reports how each was refused."""
    report = {}
    try:
        open("/etc/passwd").read()
        report["read /etc/passwd"] = "allowed"
    except OSError as e:
        report["read /etc/passwd"] = f"denied by the kernel: {type(e).__name__}"
    try:
        plugbox.host.call("fs.read", path="../../../etc/passwd")
        report["fs.read ../../../etc/passwd"] = "allowed"
    except plugbox.PlugboxError as e:
        report["fs.read ../../../etc/passwd"] = f"denied by the broker: {e.code}"
    try:
        plugbox.host.call("doc.set_text", text="pwned")
        report["doc.set_text"] = "allowed"
    except plugbox.CapabilityDenied as e:
        report["doc.set_text"] = f"denied: {e.code}"
    return report
