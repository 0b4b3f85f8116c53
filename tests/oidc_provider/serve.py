#!/usr/bin/env python3
"""A real OpenID Connect provider on loopback, for the tests only:
django-oauth-toolkit with OIDC, RS256 keys, discovery, JWKS, introspection,
revocation and the device grant, behind a threaded WSGI server.

    serve.py WORKDIR [--access-lifetime SECONDS] [--opaque]

makes a fresh SQLite database and RSA key in WORKDIR, the users of USERS
(password = PASSWORD % name), then prints "listening on URL" (URL is the
issuer's host) and serves until terminated.  The admin key for the
test-only calls (/test/app, /test/revoke) is $OIDC_TEST_ADMIN_KEY.
"""

import argparse
import os
import socketserver
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

USERS = {  # name: (e-mail, groups)
    "alice": ("alice@team.test", ["cubbi-users"]),
    "bob": ("bob@team.test", ["cubbi-users"]),
    "mallory": ("mallory@elsewhere.test", []),
}
PASSWORD = "pw-%s-oidc"


class Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def main(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("workdir")
    ap.add_argument("--access-lifetime", type=int, default=3600)
    ap.add_argument("--opaque", action="store_true", help="opaque access tokens (introspection)")
    args = ap.parse_args(argv)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    work = os.path.abspath(args.workdir)
    os.makedirs(work, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with open(os.path.join(work, "rsa.pem"), "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    holder = {}

    def app(environ, start_response):
        return holder["app"](environ, start_response)

    httpd = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=Quiet)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    os.environ.update({"OIDC_TEST_WORKDIR": work, "OIDC_TEST_ISSUER": url + "/o",
                       "OIDC_TEST_DJANGO_KEY": os.urandom(24).hex(),
                       "OIDC_TEST_ACCESS_LIFETIME": str(args.access_lifetime),
                       "OIDC_TEST_ACCESS": "opaque" if args.opaque else "jwt",
                       "DJANGO_SETTINGS_MODULE": "oidc_provider.settings"})
    os.environ.setdefault("OIDC_TEST_ADMIN_KEY", os.urandom(16).hex())
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import django

    django.setup()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application

    call_command("migrate", verbosity=0, interactive=False)
    for name, (email, groups) in USERS.items():
        user = User.objects.create_user(name, email, PASSWORD % name)
        for g in groups:
            user.groups.add(Group.objects.get_or_create(name=g)[0])
    holder["app"] = get_wsgi_application()
    sys.stdout.write(f"listening on {url}\n")
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
