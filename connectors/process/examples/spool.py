#!/usr/bin/env python3
"""passerelle's reference out-of-process connector: bridges a directory of message files.

It speaks docs/connector-protocol.md (version 1) on stdin/stdout, with the standard library
only. The account's `settings.dir` (relative to the daemon's working directory; default `spool`
in the account's data directory) holds one folder per room, named by the room percent-encoded:

    <dir>/in/<room>/<name>.json   messages people put there for the bridge, one JSON object each:
                                  {"id": "...", "sender": "alice", "name": "Alice",
                                   "text": "hello", "emote": false, "reply_to": "..."}
                                  (only "sender" and "text" are needed; "id" defaults to the
                                  file's name). Write a file under another name (a leading "."
                                  or a ".tmp" suffix) and rename it into place, so that it is
                                  never read half-written.
    <dir>/out/<room>/<name>.json  what the bridge sends into the room, written the same way.

A file in `in/` is deleted only once the daemon answered its emit (stored, or seen before), so a
kill at any moment loses nothing: what was not answered is emitted again at the next start, and
the daemon drops it as a duplicate if it had stored it. A message sent out is written under its
event key, so sending it again after a restart rewrites the same file instead of adding one.

Environment: SPOOL_POLL_MS, how often `in/` is looked at (default 200).
"""

import json
import os
import queue
import sys
import threading
import time
import urllib.parse

PROTOCOL = 1
POLL = max(int(os.environ.get("SPOOL_POLL_MS", "200")), 10) / 1000.0
MAX_FILE = 256 * 1024


def log(message):
    """The program's log: stderr, never message text."""
    print(f"spool: {message}", file=sys.stderr, flush=True)


def write(obj):
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def room_dir(base, kind, room):
    name = urllib.parse.quote(room, safe="")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return os.path.join(base, kind, name)


def write_atomically(path, obj):
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_stdin(lines):
    for line in sys.stdin:
        lines.put(line)
    lines.put(None)


class Spool:
    def __init__(self, base, rooms):
        self.base = base
        self.rooms = set()
        self.in_flight = {}  # emit id -> file path
        self.retry_after = {}  # file path -> time before which it is not emitted again
        self.next_id = 0
        self.set_rooms(rooms)

    def set_rooms(self, rooms):
        self.rooms = set(rooms)
        for room in self.rooms:
            os.makedirs(room_dir(self.base, "in", room), exist_ok=True)
            os.makedirs(room_dir(self.base, "out", room), exist_ok=True)

    def poll(self):
        """Emits every file in in/ that is not already waiting for its answer."""
        waiting = set(self.in_flight.values())
        now = time.monotonic()
        for room in sorted(self.rooms):
            folder = room_dir(self.base, "in", room)
            try:
                names = sorted(os.listdir(folder))
            except OSError:
                continue
            for name in names:
                if name.startswith(".") or name.endswith(".tmp"):
                    continue
                path = os.path.join(folder, name)
                if path in waiting or self.retry_after.get(path, 0) > now:
                    continue
                self.emit(room, name, path)

    def emit(self, room, name, path):
        try:
            if os.path.getsize(path) > MAX_FILE:
                raise ValueError("file too large")
            with open(path, encoding="utf-8") as f:
                msg = json.load(f)
            sender = str(msg["sender"])
            text = str(msg["text"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log(f"skipped an unreadable file in a room's folder ({type(e).__name__})")
            os.replace(path, path + ".bad.tmp")
            return
        content = {"text": text, "kind": "emote" if msg.get("emote") else "normal"}
        event = {
            "room": room,
            "sender": {"id": sender, "display_name": msg.get("name")},
            "remote_id": str(msg.get("id") or name),
            "kind": {"message": content},
        }
        if msg.get("reply_to"):
            event["reply_to"] = str(msg["reply_to"])
        self.next_id += 1
        emit_id = str(self.next_id)
        self.in_flight[emit_id] = path
        write({"type": "emit", "id": emit_id, "event": event})

    def emitted(self, msg):
        path = self.in_flight.pop(str(msg.get("id")), None)
        if path is None:
            return
        if msg.get("result") in ("stored", "duplicate", "unrouted", "refused"):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
        else:
            # Not stored: emitted again a little later.
            self.retry_after[path] = time.monotonic() + 1.0

    def send(self, msg):
        event = msg.get("event") or {}
        room = event.get("room")
        kind = event.get("kind") or {}
        answer = {"type": "sent", "id": msg.get("id")}
        if room not in self.rooms:
            answer["error"] = {"kind": "room_not_found"}
        elif "message" not in kind:
            answer["error"] = {"kind": "unsupported"}
        else:
            content = kind["message"]
            sender = event.get("sender") or {}
            key = str(event.get("key"))
            out = {
                "key": key,
                "sender": sender.get("id"),
                "name": sender.get("display_name"),
                "text": content.get("text", ""),
                "emote": content.get("kind") == "emote",
                "reply_to": event.get("reply_to"),
                "origin": msg.get("origin"),
            }
            name = f"{int(event.get('at') or 0):015d}-{key}.json"
            try:
                write_atomically(os.path.join(room_dir(self.base, "out", room), name), out)
                answer["remote_id"] = f"out-{key}"
            except OSError as e:
                log(f"could not write a message file ({type(e).__name__})")
                answer["error"] = {"kind": "disconnected"}
        write(answer)


def main():
    lines = queue.Queue()
    threading.Thread(target=read_stdin, args=(lines,), daemon=True).start()
    first = lines.get()
    if first is None:
        return
    init = json.loads(first)
    if init.get("type") != "init" or init.get("protocol") != PROTOCOL:
        log("the daemon did not start with init version 1")
        sys.exit(2)
    base = (init.get("settings") or {}).get("dir") or os.path.join(init.get("data_dir", "."), "spool")
    spool = Spool(base, init.get("rooms") or [])
    write({
        "type": "ready",
        "protocol": PROTOCOL,
        "name": "spool",
        "capabilities": {"replies": True, "per_message_identity": True},
        "limits": {"max_text_bytes": 64 * 1024},
    })
    write({"type": "status", "state": "connected"})
    log(f"ready with {len(spool.rooms)} room(s)")
    next_poll = 0.0
    while True:
        timeout = max(next_poll - time.monotonic(), 0)
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            spool.poll()
            next_poll = time.monotonic() + POLL
            continue
        if line is None:
            return
        try:
            msg = json.loads(line)
        except ValueError:
            log("a line from the daemon that is not JSON")
            continue
        kind = msg.get("type")
        if kind == "emitted":
            spool.emitted(msg)
        elif kind == "send":
            spool.send(msg)
        elif kind == "rooms":
            spool.set_rooms(msg.get("rooms") or [])
        elif kind == "shutdown":
            log("shutting down")
            return


if __name__ == "__main__":
    main()
