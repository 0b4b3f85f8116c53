"""The WebSocket terminal and streaming exec: GET /sessions/{id}/connect.

Query: tty=1 for a terminal (a real TTY through a Docker exec), rows, cols,
term; cmd=JSON list for a command (default: the session's login shell).

Messages, client to server: binary frames are stdin bytes; text frames are
JSON controls: {"type": "resize", "rows": R, "cols": C}, {"type": "eof"}, {"type": "stop"}
(hang up the command and what it started; "exit" follows).
Server to client: binary frames whose first byte is the stream (1 stdout,
2 stderr; a TTY has only 1), then {"type": "exit", "code": N} as text, or
{"type": "error", "error", "kind", "status"} when it could not start.
After "exit" the client closes; stdin still arriving is dropped.  A client
that closes before "exit" has gone away: what it started is stopped.
"""

import json

import gevent
from geventwebsocket.websocket import Header

from cubbi_tools.errors import CubbiError, UsageError, to_wire

LINGER = 10  # seconds a client has to close after the exit status


def _unmask(header, payload):
    """A client frame's payload unmasked (RFC 6455 5.3) in C-speed big-integer
    XOR.  gevent-websocket's own Header.mask_payload XORs byte by byte in
    Python: ~8 ms for each 64 KiB frame a client sends, during which no
    other greenlet runs, so one client pasting or piping into its terminal
    held up every other terminal and request."""
    n = len(payload)
    if not n:
        return bytearray()
    key = int.from_bytes((bytes(header.mask) * (n // 4 + 1))[:n], "big")
    return bytearray((int.from_bytes(payload, "big") ^ key).to_bytes(n, "big"))


Header.mask_payload = Header.unmask_payload = _unmask


def serve(ws, request, auth, service, ref, peers):
    """The terminal of one WebSocket client; at most server.max_terminals_per_user
    at once per user (an error message with kind too_many past it)."""
    try:
        user = auth.user(request)
        peers.take("terminals", user)
    except CubbiError as exc:
        _send(ws, json.dumps({"type": "error", **to_wire(exc)}))
        ws.close()
        return
    try:
        _serve(ws, request, user, service, ref)
    finally:
        peers.give("terminals", user)


def _serve(ws, request, user, service, ref):
    try:
        q = request.query
        tty = q.get("tty") in ("1", "true")
        command = json.loads(q.get("cmd")) if q.get("cmd") else None
        if command is not None and not (isinstance(command, list) and command
                                        and all(isinstance(c, str) for c in command)):
            raise UsageError("cmd must be a JSON list of strings")
        env = {"TERM": q.get("term") or "xterm-256color"} if tty else None
        eid, conn, handle = service.exec_open(user, ref, command, tty=tty, env=env)
    except (CubbiError, ValueError) as exc:
        wire = to_wire(exc if isinstance(exc, CubbiError) else UsageError(str(exc)))
        _send(ws, json.dumps({"type": "error", **wire}))
        ws.close()
        return
    api = service.engine.api
    if tty and q.get("rows") and q.get("cols"):
        _resize(api, eid, q.get("rows"), q.get("cols"))

    def pump():
        """Output out, then the exit status.  The client closes the socket
        when it has that status; closing it here first, with its stdin still
        arriving, would reset the connection and lose the status."""
        try:
            # gevent.sleep(0) after each frame: a command that never stops
            # printing to a client that keeps up never blocks on either
            # socket, and would otherwise keep every other greenlet waiting
            if tty:
                while True:
                    data = conn.read(65536)
                    if not data:
                        break
                    ws.send(b"\x01" + data, binary=True)
                    gevent.sleep(0)
            else:
                for stream, data in conn.frames():
                    ws.send((b"\x02" if stream == "stderr" else b"\x01") + data, binary=True)
                    gevent.sleep(0)
        except Exception:
            pass
        _send(ws, json.dumps({"type": "exit", "code": _exit_code(api, eid)}))

    def inbox():
        """Client messages until it closes; stdin once the command ended (or
        stopped reading it) is dropped."""
        stdin = True
        try:
            while True:
                msg = ws.receive()
                if msg is None:
                    return
                gevent.sleep(0)  # a client that never stops sending must not starve pump
                if isinstance(msg, (bytes, bytearray)):
                    if stdin and not out.dead:
                        try:
                            conn.sendall(bytes(msg))
                        except Exception:
                            stdin = False
                    continue
                try:
                    ctl = json.loads(msg)
                except ValueError:
                    continue
                if ctl.get("type") == "resize" and tty:
                    _resize(api, eid, ctl.get("rows"), ctl.get("cols"))
                elif ctl.get("type") == "stop" and not stopping:  # answered by "exit"
                    stopping.append(gevent.spawn(_stop, service, handle))
                elif ctl.get("type") == "eof" and stdin:
                    stdin = False
                    try:
                        conn.shutdown_write()
                    except Exception:
                        pass
        except Exception:
            pass

    stopping = []
    out = gevent.spawn(pump)
    rx = gevent.spawn(inbox)
    running = True
    try:
        gevent.wait([out, rx], count=1)
        if out.dead:  # the command ended: the client closes once it has the status
            conn.close()  # wakes a write of stdin the command never read
            rx.join(timeout=LINGER)
        running = not out.dead
    finally:
        conn.close()
        out.kill(block=True, timeout=5)
        rx.kill(block=True, timeout=5)
        try:
            ws.close()
        except Exception:
            pass
    if running and not stopping:  # the client went away first: stop what it started
        _stop(service, handle)


def _stop(service, handle):
    """Stop an exec's processes (service.exec_stop); a failure is logged."""
    try:
        service.exec_stop(handle)
    except Exception as exc:  # logged; the client is gone anyway
        import sys

        sys.stderr.write(f"cubbi-server: could not stop an exec in {handle[0][:12]}: "
                         f"{type(exc).__name__}: {exc}\n")


def _exit_code(api, eid):
    """The exec's exit status (None when the engine cannot tell)."""
    try:
        return api.exec_exit_code(eid)
    except CubbiError:
        return None


def _resize(api, eid, rows, cols):
    try:
        api.exec_resize(eid, int(rows), int(cols))
    except (CubbiError, TypeError, ValueError):
        pass


def _send(ws, text):
    try:
        ws.send(text)
    except Exception:
        pass
