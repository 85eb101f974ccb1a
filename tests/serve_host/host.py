"""A plugbox serve host written from docs/serve.md alone: it speaks only the documented lines,
and checks every line both ways against docs/serve.schema.json.

Usage: host.py PLUGBOX SCHEMA PLUGIN_DIR WORK_DIR
Prints one JSON object: what it saw. Exits non-zero (with the reason on stderr) when a line
breaks the schema or the documented behaviour.
"""

import json
import subprocess
import sys

import jsonschema

plugbox, schema_path, plugin_dir, work = sys.argv[1:5]
with open(schema_path) as f:
    schema = json.load(f)
request_schema = schema["host_to_serve"]["request"]
line_schemas = schema["serve_to_host"]


def check(instance, kind_schema, what):
    try:
        jsonschema.validate(instance, kind_schema)
    except jsonschema.ValidationError as e:
        sys.exit(f"{what} breaks the schema: {e.message}: {instance}")


serve = subprocess.Popen(
    [plugbox, "serve", "--events", "--capability", "doc.get_text", "--allow-ungranted",
     "--protocol", "1", "--audit", f"{work}/audit.jsonl", "--state", f"{work}/state"],
    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
)
events = []
host_calls = []


def read():
    """The next line, checked against the schema of its kind."""
    line = serve.stdout.readline()
    if not line:
        sys.exit("serve closed its stdout")
    msg = json.loads(line)
    kind = msg.get("op", "answer")
    if kind == "event" and msg.get("event") == "lost":
        kind = "events_lost"
    if kind not in line_schemas:
        sys.exit(f"an undocumented line: {msg}")
    check(msg, line_schemas[kind], kind)
    return msg


def on_host_call(msg, asking):
    # The documented attribution: the id of the request the plugin is running for.
    if msg.get("request") != asking:
        sys.exit(f"a host_call for request {asking!r} names {msg.get('request')!r}: {msg}")
    host_calls.append(msg)
    if msg["capability"] == "doc.get_text":
        reply = {"op": "host_reply", "call": msg["call"], "result": "one two three"}
    else:
        reply = {"op": "host_reply", "call": msg["call"],
                 "error": {"code": "denied", "message": "not here"}}
    send(reply)


def send(request):
    check(request, request_schema, "request")
    serve.stdin.write(json.dumps(request) + "\n")
    serve.stdin.flush()


def ask(request):
    """Sends a request and returns its answer, handling lines that come meanwhile."""
    send(request)
    while True:
        msg = read()
        if msg.get("op") == "event":
            events.append(msg)
        elif msg.get("op") == "host_call":
            on_host_call(msg, request["id"])
        elif "op" not in msg and msg["id"] == request["id"]:
            return msg
        else:
            sys.exit(f"unexpected line: {msg}")


def wait_event(name):
    while not any(e["event"] == name for e in events):
        msg = read()
        if msg.get("op") != "event":
            sys.exit(f"unexpected line while waiting for {name}: {msg}")
        events.append(msg)
    return next(e for e in events if e["event"] == name)


ready = read()
assert ready["op"] == "ready" and ready["protocol"] == 1 and 1 in ready["protocols"], ready
loaded = ask({"id": "load", "op": "load", "dir": plugin_dir})
assert loaded["ok"], loaded
described = ask({"id": "describe", "op": "describe", "plugin": "doc-words"})
assert described["ok"], described
counted = ask({"id": "count", "op": "call", "plugin": "doc-words", "command": "count"})
assert counted == {"id": "count", "ok": True, "result": 3}, counted
crashed = ask({"id": "crash", "op": "call", "plugin": "doc-words", "command": "crash"})
assert not crashed["ok"], crashed
exited = wait_event("exited")
restarted = wait_event("restarted")
again = ask({"id": "again", "op": "call", "plugin": "doc-words", "command": "count"})
missing = ask({"id": 9, "op": "describe", "plugin": "nope"})
bye = ask({"id": "bye", "op": "shutdown"})
rest = []
for line in serve.stdout:
    msg = json.loads(line)
    check(msg, line_schemas["event"], "event")
    rest.append(msg)
status = serve.wait()
print(json.dumps({
    "ready": ready, "described": described["result"], "crashed": crashed["error"],
    "exited": exited, "restarted": restarted, "again": again, "missing": missing["error"],
    "host_calls": host_calls, "events": [e["event"] for e in events + rest],
    "last_events": [(e["event"], e["instance"]) for e in rest], "bye": bye, "status": status,
}))
