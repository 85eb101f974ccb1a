"""word-count: counts the words, lines and characters of the open document."""
import plugbox


@plugbox.command
def count() -> dict:
    text = plugbox.host.call("doc.get_text")
    stats = {"words": len(text.split()), "lines": text.count("\n") + 1, "chars": len(text)}
    plugbox.log.info("counted", **stats)
    return stats
