"""session.creator / creator_gone: who made a half-made container, and
whether that process has ended (engine.sweep_unfinished removes the
container then)."""

import subprocess
import sys

from cubbi_tools import session as S


def test_this_process_is_not_gone():
    me = S.creator()
    assert me.count(":") == 3 and me.split(":")[2].isdigit()
    assert not S.creator_gone(me)


def test_an_ended_process_is_gone():
    proc = subprocess.Popen([sys.executable, "-c", "from cubbi_tools import session as S; "
                             "print(S.creator())"], stdout=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": ":".join(sys.path)})
    child = proc.communicate()[0].strip()
    assert child and child != S.creator()
    assert S.creator_gone(child)


def test_what_cannot_be_told_is_never_gone():
    boot, ns, pid, start = S.creator().split(":")
    for value in (None, "", "junk", f"another-boot:{ns}:{pid}:1", f"{boot}:123:{pid}:1",
                  f"{boot}:{ns}:notapid:1"):
        assert not S.creator_gone(value), value
