"""A command on a real pseudo-terminal, for the tests of what a user sees in
a terminal: its window size set with TIOCSWINSZ, keystrokes typed, the
screen read until a pattern shows (with a deadline, never a fixed sleep).

    with Terminal(["cubbi-connect", sid], env, rows=30, cols=100) as t:
        t.expect(rb"[$#] ")              # a prompt
        t.type("stty size\\n")
        t.expect(rb"30 100")
        t.resize(40, 120)                # the kernel's SIGWINCH, and ours
        ...
        assert t.wait() == 0
"""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time


class Terminal:
    def __init__(self, argv, env, rows=24, cols=80, cwd=None):
        self.argv = argv
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the command, as typed in a terminal
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                if cwd:
                    os.chdir(cwd)
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.screen = b""
        self.status = None
        self._eof = False

    # -- reading ---------------------------------------------------------
    def _read(self, timeout):
        """Read what the terminal shows within timeout: the number of bytes
        read (0 when nothing came), None once the terminal is closed."""
        if self._eof:
            return None
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return 0
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            data = b""
        if not data:
            self._eof = True
            return None
        self.screen += data
        return len(data)

    def expect(self, pattern, timeout=60, start=0):
        """The first match of pattern (bytes regex) in what the terminal
        showed from offset start; AssertionError with the screen when it
        does not show within timeout seconds or the command ends first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.screen, start)
            if m:
                return m
            left = deadline - time.monotonic()
            if left <= 0 or self._read(min(left, 0.5)) is None:
                m = rx.search(self.screen, start)
                if m:
                    return m
                raise AssertionError(f"{pattern!r} did not show within {timeout}s on the "
                                     f"terminal of {self.argv}; it showed:\n"
                                     + self.text())

    def text(self):
        return self.screen.decode(errors="replace")

    # -- writing ---------------------------------------------------------
    def type(self, text):
        os.write(self.fd, text.encode() if isinstance(text, str) else text)

    def resize(self, rows, cols):
        """A new window size, as a terminal emulator sets it: TIOCSWINSZ on
        the terminal (the kernel sends SIGWINCH to its foreground group),
        and a SIGWINCH to the command itself."""
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        try:
            os.kill(self.pid, signal.SIGWINCH)
        except ProcessLookupError:
            pass

    # -- the end -----------------------------------------------------------
    def wait(self, timeout=60):
        """The exit status, reading the terminal meanwhile (a child blocked
        on a full terminal never ends)."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.argv} did not end within {timeout}s; the "
                                     "terminal showed:\n" + self.text())
            if self._read(min(left, 0.2)) is None:
                select.select([], [], [], 0.05)  # the terminal closed: the child is ending
        while self._read(0):  # what it printed last (0: nothing more, None: closed)
            pass
        return self.status

    def close(self):
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self.status = -9
        try:
            os.close(self.fd)
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
