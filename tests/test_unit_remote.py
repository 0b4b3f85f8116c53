"""The remote client's pure helpers: no engine, no server."""

import pytest

from cubbi_tools.remote import is_loopback


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "a.localhost",
                                  "127.0.0.1", "127.1", "127.0.0.1.", "0x7f.1", "2130706433",
                                  "127.9.8.7", "::1", "[::1]", "::ffff:127.0.0.1",
                                  "[::ffff:127.0.0.1]"])
def test_every_form_of_loopback_is_loopback(host):
    # the plain-http warning fired for 127.1, [::ffff:127.0.0.1], localhost. (ATTACK-11 #10)
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "::", "::ffff:10.0.0.1", "example.com",
                                  "localhost.example.com", "128.0.0.1", "", "127.0.0.1.evil"])
def test_other_hosts_are_not_loopback(host):
    assert not is_loopback(host)
