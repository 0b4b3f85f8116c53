"""The WebSocket terminal and streaming exec: GET /sessions/{id}/connect.

Query: tty=1 for a terminal (a real TTY through a Docker exec), rows, cols,
term; cmd=JSON list for a command (default: the session's login shell).

Messages, client to server: binary frames are stdin bytes; text frames are
JSON controls: {"type": "resize", "rows": R, "cols": C}, {"type": "eof"}.
Server to client: binary frames whose first byte is the stream (1 stdout,
2 stderr; a TTY has only 1), then {"type": "exit", "code": N} as text, or
{"type": "error", "error", "kind", "status"} when it could not start.
"""

import json

import gevent

from cubbi_tools.errors import CubbiError, UsageError


def serve(ws, request, auth, service, ref):
    from .app import classify

    try:
        user = auth.user(request)
        q = request.query
        tty = q.get("tty") in ("1", "true")
        command = json.loads(q.get("cmd")) if q.get("cmd") else None
        if command is not None and not (isinstance(command, list) and command
                                        and all(isinstance(c, str) for c in command)):
            raise UsageError("cmd must be a JSON list of strings")
        env = {"TERM": q.get("term") or "xterm-256color"} if tty else None
        eid, conn, handle = service.exec_open(user, ref, command, tty=tty, env=env)
    except (CubbiError, ValueError) as exc:
        status, kind = classify(exc) if isinstance(exc, CubbiError) else (400, "usage")
        _send(ws, json.dumps({"type": "error", "error": str(exc), "kind": kind, "status": status}))
        ws.close()
        return
    api = service.engine.api
    if tty and q.get("rows") and q.get("cols"):
        _resize(api, eid, q.get("rows"), q.get("cols"))

    def pump():
        try:
            if tty:
                while True:
                    data = conn.read(65536)
                    if not data:
                        break
                    ws.send(b"\x01" + data, binary=True)
            else:
                for stream, data in conn.frames():
                    ws.send((b"\x02" if stream == "stderr" else b"\x01") + data, binary=True)
        except Exception:
            pass
        try:
            code = api.exec_inspect(eid).get("ExitCode")
        except CubbiError:
            code = None
        _send(ws, json.dumps({"type": "exit", "code": code}))
        try:
            ws.close()
        except Exception:
            pass

    out = gevent.spawn(pump)
    try:
        while True:
            msg = ws.receive()
            if msg is None:
                break
            if isinstance(msg, (bytes, bytearray)):
                conn.sendall(bytes(msg))
                continue
            try:
                ctl = json.loads(msg)
            except ValueError:
                continue
            if ctl.get("type") == "resize" and tty:
                _resize(api, eid, ctl.get("rows"), ctl.get("cols"))
            elif ctl.get("type") == "eof":
                conn.shutdown_write()
    except Exception:
        pass
    finally:
        if not out.dead:
            out.join(timeout=2 if not tty else 0)
        running = not out.dead
        conn.close()
        out.kill(block=True, timeout=5)
        if running:  # the client went away first: stop what it started
            try:
                service.exec_stop(handle)
            except Exception as exc:  # logged; the client is gone anyway
                import sys

                sys.stderr.write(f"cubbi-server: could not stop an exec in {handle[0][:12]}: "
                                 f"{type(exc).__name__}: {exc}\n")


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
