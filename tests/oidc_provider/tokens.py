"""JWT access tokens signed with the provider's RS256 key (what Authentik
issues), and the claims of the ID token and userinfo (username, e-mail,
groups)."""

import json
import time
import uuid

from oauth2_provider.oauth2_validators import OAuth2Validator
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.utils import jwk_from_pem


def _claims(user):
    return {"preferred_username": user.username, "email": user.email,
            "groups": sorted(g.name for g in user.groups.all())}


def jwt_access_token(request, refresh_token=False):
    from jwcrypto import jwt

    key = jwk_from_pem(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    now = int(time.time())
    claims = {"iss": oauth2_settings.OIDC_ISS_ENDPOINT, "sub": str(request.user.pk),
              "aud": request.client_id, "azp": request.client_id, "iat": now, "nbf": now,
              "exp": now + oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS,
              "jti": uuid.uuid4().hex, "scope": " ".join(request.scopes or []),
              **_claims(request.user)}
    token = jwt.JWT(header={"alg": "RS256", "kid": key.thumbprint(), "typ": "JWT"},
                    claims=json.dumps(claims))
    token.make_signed_token(key)
    return token.serialize()


class Validator(OAuth2Validator):
    oidc_claim_scope = None  # every claim in the ID token

    def get_additional_claims(self, request):
        return _claims(request.user)
