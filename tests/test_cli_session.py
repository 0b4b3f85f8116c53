"""Session lifecycle against the real engine, run as a user types it."""

import pytest

pytestmark = pytest.mark.engine


def test_create_ls_close_roundtrip(cubbi, busybox_image, prefix):
    r = cubbi("cubbi-create", "--image", busybox_image, "--name", f"{prefix}-a",
              "--no-mount", "--json")
    assert r.exit_code == 0, r
    (rec,) = r.json()
    assert rec["name"] == f"{prefix}-a"
    ls = cubbi("cubbi-ls", "--json", "--filter", f"name={prefix}*")
    assert ls.exit_code == 0, ls
    assert [x["id"] for x in ls.json()] == [rec["id"]]
    c = cubbi("cubbi-close", rec["id"])
    assert c.exit_code == 0, c
    assert cubbi("cubbi-ls", "-q", "--all", "--filter", f"name={prefix}*").stdout == ""
