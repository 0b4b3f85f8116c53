"""A command in a local session without a TTY (cubbi-connect ID -- CMD):
LocalEngine.connect's non-interactive path, over the Engine API."""

import os

from .errors import CubbiError


class _Signalled(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.code = 128 + signum


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def run_exec(engine, rec, command, use_stdin, stdout):
    """Run command in the session over the Engine API, without a TTY:
    stdin (unless use_stdin is False) in, the command's stdout to STDOUT and
    stderr to ours, its exit status back.  SIGINT, SIGTERM or SIGHUP stop
    its process tree in the container (128+signal); a reader closing
    STDOUT stops it too (141, as SIGPIPE ends a pipeline's writer)."""
    import signal
    import sys
    import threading

    eid, conn, handle = engine.exec_marked(rec, command)

    def pump():
        try:
            fd = sys.stdin.fileno()
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                conn.sendall(data)
        except (OSError, ValueError):
            pass
        conn.shutdown_write()

    if use_stdin and sys.stdin is not None:
        threading.Thread(target=pump, daemon=True).start()
    else:
        conn.shutdown_write()

    def on_signal(signum, _frame):
        raise _Signalled(signum)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.signal(sig, on_signal) for sig in stops}
    out = {"stdout": stdout.fileno(), "stderr": 2}
    code = None
    try:
        try:
            for stream, data in conn.frames():
                _write_all(out.get(stream, out["stdout"]), data)
        except _Signalled as exc:
            code = exc.code
        except BrokenPipeError:
            code = 128 + signal.SIGPIPE
        finally:
            for sig in stops:  # a second Ctrl-C while stopping is not an error
                signal.signal(sig, signal.SIG_IGN)
            conn.close()
        if code is not None:
            engine.exec_stop(handle)
            return code
        code = engine.api.exec_exit_code(eid)  # the stream ends as the process does
        if code is not None:
            return code
        raise CubbiError(f"the command in session {rec['id']} ended without an exit status")
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
