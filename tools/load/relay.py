#!/usr/bin/env python3
"""The load tool's out-of-process connector (docs/connector-protocol.md, version 1): every
message the daemon sends it in room "in" it answers at once and emits back, unchanged, in room
"out". A message through it crosses the process boundary twice (send, then emit), so the load
tool measures what an out-of-process connector costs against an in-process one. Standard
library only; it never logs message text.
"""

import json
import sys


def write(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    lines = iter(sys.stdin.readline, "")
    init = json.loads(next(lines))
    if init.get("protocol") != 1:
        sys.exit(2)
    write({"type": "ready", "protocol": 1, "name": "relay",
           "capabilities": {"per_message_identity": True}})
    write({"type": "status", "state": "connected"})
    n = 0
    for line in lines:
        msg = json.loads(line)
        kind = msg.get("type")
        if kind == "shutdown":
            return
        if kind != "send":
            continue
        event = msg["event"]
        n += 1
        write({"type": "sent", "id": msg["id"], "remote_id": f"relay-{event['key']}"})
        if event.get("room") == "in" and "message" in event.get("kind", {}):
            write({"type": "emit", "id": str(n), "event": {
                "room": "out",
                "sender": event["sender"],
                "remote_id": f"relayed-{event['key']}",
                "kind": {"message": {"text": event["kind"]["message"].get("text", "")}},
            }})


if __name__ == "__main__":
    main()
