"""Settings of the test OpenID Connect provider (serve.py sets the
environment first): django-oauth-toolkit with OIDC, an RS256 key, a short
access-token lifetime, SQLite in a temp dir.  Never for production."""

import os

BASE = os.path.dirname(os.path.abspath(__file__))
WORK = os.environ["OIDC_TEST_WORKDIR"]
ISSUER = os.environ["OIDC_TEST_ISSUER"]

SECRET_KEY = os.environ["OIDC_TEST_DJANGO_KEY"]
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "oidc_provider.urls"
INSTALLED_APPS = [
    "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "oauth2_provider", "oidc_provider.apps.ProviderConfig",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates",
              "DIRS": [os.path.join(BASE, "templates")], "APP_DIRS": True,
              "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                 "django.contrib.auth.context_processors.auth"]}}]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3",
                         "NAME": os.path.join(WORK, "provider.db")}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; test users only
USE_TZ = True
LOGIN_URL = "/accounts/login/"
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING = {"version": 1, "disable_existing_loggers": True,  # errors to the provider log
           "handlers": {"err": {"class": "logging.StreamHandler"}},
           "loggers": {"django.request": {"handlers": ["err"], "level": "ERROR"}}}

with open(os.path.join(WORK, "rsa.pem")) as _fh:
    _KEY = _fh.read()

OAUTH2_PROVIDER = {
    "OIDC_ENABLED": True,
    "OIDC_RSA_PRIVATE_KEY": _KEY,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "PKCE_REQUIRED": True,
    "SCOPES": {"openid": "OpenID Connect", "profile": "your name", "email": "your e-mail",
               "groups": "your groups", "offline_access": "stay signed in"},
    "DEFAULT_SCOPES": ["openid"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": int(os.environ.get("OIDC_TEST_ACCESS_LIFETIME") or 3600),
    "AUTHORIZATION_CODE_EXPIRE_SECONDS": 60,
    "ROTATE_REFRESH_TOKEN": True,
    "DEVICE_FLOW_INTERVAL": 1,
    "OAUTH_DEVICE_VERIFICATION_URI": ISSUER.rsplit("/o", 1)[0] + "/o/device/",
    "OAUTH2_VALIDATOR_CLASS": "oidc_provider.tokens.Validator",
    # JWT access tokens (as Authentik's), or DOT's opaque ones (then the
    # service introspects): OIDC_TEST_ACCESS=opaque
    "ACCESS_TOKEN_GENERATOR": (None if os.environ.get("OIDC_TEST_ACCESS") == "opaque"
                               else "oidc_provider.tokens.jwt_access_token"),
    "REFRESH_TOKEN_GENERATOR": "oauthlib.oauth2.rfc6749.tokens.random_token_generator",
    "ALLOWED_REDIRECT_URI_SCHEMES": ["http", "https"],
}
