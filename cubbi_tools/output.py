"""The one place that knows output formats: table, JSON lines, ids only.

JSON lines: one object per line, flushed per line, nothing else on stdout.
Messages go to stderr.  Colour only on a terminal and without NO_COLOR.
"""

import json
import os
import sys


def use_color(stream=None, enabled=True):
    """Colour on STREAM: a terminal, no NO_COLOR, TERM not dumb, and ENABLED
    (the ui.colors setting, read by the caller; a callable is asked last,
    so the setting is read only on a terminal)."""
    stream = stream or sys.stdout
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb" \
        and bool(enabled() if callable(enabled) else enabled)


def dumps(record):
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str)


def json_line(record, stream=None):
    stream = stream or sys.stdout
    stream.write(dumps(record) + "\n")
    stream.flush()


def message(text, prog=None):
    """A progress or status message on stderr."""
    prog = prog or os.path.basename(sys.argv[0])
    sys.stderr.write("".join(f"{prog}: {line}\n" for line in str(text).splitlines() or [""]))
    sys.stderr.flush()


def say(progress, text):
    """A progress line: to PROGRESS (a callable) when given, else on stderr
    as "cubbi: TEXT"."""
    if progress is not None:
        progress(text)
    else:
        sys.stderr.write(f"cubbi: {text}\n")
        sys.stderr.flush()


def plural(n, what):
    """'1 session', '2 sessions'."""
    return f"{n} {what}" + ("" if n == 1 else "s")


_STATUS_COLORS = {"running": "32", "initializing": "33", "failed": "31", "stopped": "90"}


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ",".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def table(rows, columns, stream=None, colors=True):
    """Print rows (dicts) as aligned columns; columns is [(key, HEADER)];
    a status column is coloured when use_color(stream, colors)."""
    stream = stream or sys.stdout
    color = use_color(stream, colors)
    cells = [[_cell(r.get(k)) for k, _ in columns] for r in rows]
    widths = [len(h) for _, h in columns]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    out = ["  ".join(h.ljust(widths[i]) for i, (_, h) in enumerate(columns)).rstrip()]
    for row in cells:
        parts = []
        for i, c in enumerate(row):
            text = c.ljust(widths[i])
            if color and columns[i][0] == "status" and c in _STATUS_COLORS:
                text = f"\033[{_STATUS_COLORS[c]}m{c}\033[0m" + " " * (widths[i] - len(c))
            parts.append(text)
        out.append("  ".join(parts).rstrip())
    stream.write("\n".join(out) + "\n")
    stream.flush()


class Printer:
    """Prints records in the chosen format: 'table', 'json' or 'quiet'."""

    def __init__(self, fmt, columns=None, key="id", stream=None, colors=True):
        self.fmt = fmt
        self.colors = colors
        self.columns = columns or []
        self.key = key
        self.stream = stream or sys.stdout
        self.rows = []

    def add(self, record):
        if self.fmt == "json":
            json_line(record, self.stream)
        elif self.fmt == "quiet":
            self.stream.write(f"{record.get(self.key)}\n")
            self.stream.flush()
        else:
            self.rows.append(record)

    def close(self):
        if self.fmt == "table" and self.columns:
            table(self.rows, self.columns, self.stream, self.colors)
            self.rows = []
