#!/usr/bin/env python3
"""$BROWSER for the sign-in tests: `fakebrowser.py URL` opens URL as the
person named by $FAKEBROWSER_USER, through the test provider's own login
and consent forms (tests/oidcproc.Person), and follows the redirects back
to the CLI's loopback listener, as a browser would.  FAKEBROWSER_CONSENT=deny
denies the consent; FAKEBROWSER_LOG gets one line per run (what happened)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oidcproc import Person  # noqa: E402


def main(url):
    person = Person(os.environ["FAKEBROWSER_USER"], os.environ.get("FAKEBROWSER_PASSWORD"))
    try:
        last = person.visit(url, consent=os.environ.get("FAKEBROWSER_CONSENT") != "deny")
        note = f"ok {last.split('?')[0]}"
    except Exception as exc:
        note = f"error {type(exc).__name__}: {exc}"
    log = os.environ.get("FAKEBROWSER_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(note.replace("\n", " ") + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
