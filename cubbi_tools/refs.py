"""Session references from arguments or stdin (bare ids or JSON lines with
an "id" field), so `cubbi-ls --json | jq -c ... | cubbi-close` works."""

import json
import sys

from .errors import UsageError


class BadLine:
    """A stdin line that names no session; reported, then skipped."""

    def __init__(self, lineno, text, why):
        self.lineno, self.text, self.why = lineno, text, why

    def __str__(self):
        return f"stdin line {self.lineno}: {self.why}"


def refs_from(args_ids, stdin=None, allow_empty=False, what="session ids"):
    """Yield ids (str) or BadLine items.  With no ids given, read stdin when
    it is not a terminal; on a terminal that is a usage error."""
    if args_ids:
        yield from args_ids
        return
    stdin = stdin or sys.stdin
    if stdin is None or stdin.isatty():
        if allow_empty:
            return
        raise UsageError(f"give {what} as arguments, or pipe them on stdin "
                         "(bare ids or JSON lines with an \"id\" field)")
    for n, line in enumerate(stdin, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                yield BadLine(n, text, "not valid JSON")
                continue
            ref = obj.get("id") if isinstance(obj, dict) else None
            if not isinstance(ref, str) or not ref:
                yield BadLine(n, text, 'JSON object has no string "id" field')
                continue
            yield ref
        elif any(c.isspace() for c in text) or text.startswith(("[", '"')):
            yield BadLine(n, text, "expected a session id or a JSON object with \"id\"")
        else:
            yield text


def each_session(engine, ids, tally, stdin=None):
    """The session records that ids (or stdin) name, listing the engine
    once.  A bad stdin line or an unknown/ambiguous id goes to
    tally.failed(ref, exc) and the rest carry on."""
    from .errors import CubbiError

    refs = list(refs_from(ids, stdin))
    records = engine.index()  # local: one list for all refs; remote: None
    for ref in refs:
        if isinstance(ref, BadLine):
            tally.failed(None, UsageError(str(ref)))
            continue
        try:
            yield engine.resolve(ref, records)
        except CubbiError as exc:
            tally.failed(ref, exc)
