"""title-case: rewrites every line of the open document in title case."""
import plugbox


@plugbox.command
def apply() -> int:
    text = plugbox.host.call("doc.get_text")
    new = "\n".join(line.title() for line in text.split("\n"))
    plugbox.host.call("doc.set_text", text=new)
    return sum(a != b for a, b in zip(text, new))
