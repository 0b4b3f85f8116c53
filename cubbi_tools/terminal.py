"""The client side of the service's WebSocket terminal (cubbi-connect -r).

With a TTY: the local terminal in raw mode, keystrokes out, output in, the
window size sent at start and on every SIGWINCH.  Without (`-- CMD`):
stdin is streamed then closed (EOF), stdout and stderr come back on their
own streams, and the command's exit status is returned, as a local
cubbi-connect does: once the command has ended no more stdin is sent (`yes |
cubbi-connect ID -- echo done` is 0); a reader that closes stdout (`|
head -1`) stops the command and gives 141 (128 + SIGPIPE), Ctrl-C stops it
and gives 130; in both cases once the server has stopped it.
"""

import json
import os
import select
import signal
import sys
import threading
import time

from .errors import CubbiError, from_wire

STOP_WAIT = 5  # seconds the server has to stop a command the client gives up on


def _size():
    try:
        sz = os.get_terminal_size(sys.stdout.fileno())
        return sz.lines, sz.columns
    except OSError:
        return None


def run(remote, rec, command=None, tty=False, use_stdin=True, stdout=None):
    ws = remote.websocket(rec, command, tty=tty, size=_size() if tty else None)
    result = {"code": None, "error": None, "pipe": None, "stopping": None}
    done, left = threading.Event(), threading.Event()
    out = {1: stdout or sys.stdout.buffer, 2: sys.stderr.buffer}

    def reader():
        try:
            while True:
                msg = ws.recv()
                if msg is None:
                    return
                if isinstance(msg, bytes):
                    if msg:
                        stream = out.get(msg[0], out[1])
                        try:
                            stream.write(msg[1:])
                            stream.flush()
                        except BrokenPipeError:  # stop the command, as SIGPIPE would
                            result["pipe"] = stream
                            _silence(stream)
                            _stop(ws, result)
                    continue
                try:
                    ctl = json.loads(msg)
                except ValueError:
                    continue
                if ctl.get("type") == "exit":
                    result["code"] = ctl.get("code")
                    done.set()  # the command ended: stop sending stdin, close
                    if not left.wait(5):  # stuck sending stdin the server no longer reads
                        _shutdown(ws)
                    return
                if ctl.get("type") == "error":
                    result["error"] = ctl
        except (OSError, ValueError):
            pass
        finally:
            done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    fd = sys.stdin.fileno() if use_stdin and sys.stdin is not None else None
    saved = None
    winch = {"changed": False}
    if tty and fd is not None and os.isatty(fd):
        import termios
        import tty as ttymod

        saved = termios.tcgetattr(fd)
        ttymod.setraw(fd)
        signal.signal(signal.SIGWINCH, lambda *_: winch.__setitem__("changed", True))
    try:
        stdin_open = fd is not None
        if not stdin_open:
            _send(ws.send_text, json.dumps({"type": "eof"}))
        while not done.is_set():
            if result["stopping"] and time.monotonic() - result["stopping"] > STOP_WAIT:
                break
            if winch["changed"]:
                winch["changed"] = False
                size = _size()
                if size:
                    _send(ws.send_text, json.dumps({"type": "resize", "rows": size[0],
                                                    "cols": size[1]}))
            if not stdin_open:
                done.wait(0.2)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except (OSError, ValueError):
                ready = []
            if not ready:
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                if not _send(ws.send_binary, data):
                    break
            else:
                stdin_open = False
                _send(ws.send_text, json.dumps({"type": "eof"}))
        done.wait(0 if result["stopping"] else 10)
    except KeyboardInterrupt:  # 130, once the command is stopped in the session
        _stop(ws, result)
        done.wait(STOP_WAIT)
        raise
    finally:
        left.set()
        if saved is not None:
            import termios

            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, signal.SIG_DFL)
        ws.close()
    if result["pipe"] is not None:
        return 141  # 128 + SIGPIPE, as the command itself gets locally
    err = result["error"]
    if err:
        raise from_wire(err, err.get("status"), "connect failed")
    if result["code"] is None:
        raise CubbiError(f"the connection to remote {remote.remote!r} ended without an exit status")
    return result["code"]


def _silence(stream):
    """Point a stream whose reader went away at /dev/null, so nothing (the
    interpreter's flush at exit either) writes to the closed pipe again."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def _stop(ws, result):
    """Ask the server to stop the command (it answers with its exit)."""
    if not result["stopping"]:
        result["stopping"] = time.monotonic()
        _send(ws.send_text, json.dumps({"type": "stop"}))


def _shutdown(ws):
    import socket

    try:
        ws.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _send(send, data):
    """Send, or False when the server already closed (its reason comes in
    the reader's last message)."""
    try:
        send(data)
        return True
    except OSError:
        return False
