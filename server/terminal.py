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
from cubbi_tools.wsclient import mask

LINGER = 10  # seconds a client has to close after the exit status


def _unmask(header, payload):
    """A client frame's payload unmasked at C speed (wsclient.mask: a 64 KiB
    frame in ~0.1 ms).  gevent-websocket's own Header.mask_payload XORs byte
    by byte in Python: ~8 ms for each 64 KiB frame a client sends, during
    which no other greenlet runs, so one client pasting or piping into its
    terminal held up every other terminal and request."""
    return mask(payload, bytes(header.mask))


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
    given = []

    def release():  # once: when the client is gone, before what it started is stopped
        if not given:
            given.append(True)
            peers.give("terminals", user)

    try:
        _serve(ws, request, user, service, ref, release)
    finally:
        release()


def _turns(sock, write=False):
    """turn() for a greenlet that reads (or writes) sock in a loop: lets
    every greenlet whose socket is ready run before this one goes on, when
    this one has not waited since its last turn.  The wait is for sock to be
    ready (it is, or soon), through the event loop's poll.  gevent.sleep(0)
    only queues a callback, and gevent runs up to 50 of those between two
    polls: a flooded terminal's two greenlets kept passing the turn to each
    other while the typists' sockets were not even polled.  A typist waits
    for each key anyway (the loop has polled since): no turn, no delay."""
    from gevent.socket import wait_read, wait_write

    loop = gevent.get_hub().loop
    last = [None]

    def turn():
        now = getattr(loop, "iteration", None)  # libev's poll count (a loop without it: always)
        if now is None or now == last[0]:
            try:
                (wait_write if write else wait_read)(sock.fileno())
            except (OSError, ValueError):
                pass  # closed: the read or write that follows says so
        last[0] = getattr(loop, "iteration", None)

    return turn


def _serve(ws, request, user, service, ref, release):
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
            # a turn before each read: a command that never stops printing
            # to a client that keeps up never blocks on either socket, and
            # would otherwise keep every other greenlet waiting
            turn = _turns(conn.sock)
            if tty:
                while True:
                    turn()
                    data = conn.read(65536)
                    if not data:
                        break
                    ws.send(b"\x01" + data, binary=True)
            else:
                for stream, data in conn.frames(turn=turn):
                    ws.send((b"\x02" if stream == "stderr" else b"\x01") + data, binary=True)
        except Exception:
            pass
        _send(ws, json.dumps({"type": "exit", "code": _exit_code(api, eid)}))

    def inbox():
        """Client messages until it closes; stdin once the command ended (or
        stopped reading it) is dropped."""
        stdin = True
        turn = _turns(conn.sock, write=True)
        try:
            while True:
                msg = ws.receive()
                if msg is None:
                    return
                if isinstance(msg, (bytes, bytearray)):
                    if stdin and not out.dead:
                        turn()  # a client that never stops sending
                        try:
                            conn.sendall(msg)
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
        release()  # the terminal is closed: its slot is free while the stop runs
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
