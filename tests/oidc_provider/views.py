"""The discovery document with the endpoints Authentik's names too, and
two test-only calls (guarded by the admin key of serve.py): register the
client, revoke a user's tokens as an admin would."""

import json
import os

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.views.oidc import ConnectDiscoveryInfoView


class Discovery(ConnectDiscoveryInfoView):
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        data = json.loads(response.content)
        base = data["issuer"].rstrip("/")
        data.update({"introspection_endpoint": base + "/introspect/",
                     "revocation_endpoint": base + "/revoke_token/",
                     "device_authorization_endpoint": base + "/device-authorization/",
                     "grant_types_supported": ["authorization_code", "refresh_token",
                                               "urn:ietf:params:oauth:grant-type:device_code"]})
        return JsonResponse(data)


def _admin(request):
    return request.headers.get("X-Test-Admin") == os.environ["OIDC_TEST_ADMIN_KEY"]


@csrf_exempt
def app(request):
    """POST {client_id, client_secret, redirect_uris: [...]}: the confidential
    client (authorization code + device grant, RS256 ID tokens)."""
    from oauth2_provider.models import get_application_model

    if not _admin(request) or request.method != "POST":
        return JsonResponse({"error": "forbidden"}, status=403)
    body = json.loads(request.body)
    Application = get_application_model()
    Application.objects.filter(client_id=body["client_id"]).delete()
    Application.objects.create(
        client_id=body["client_id"], client_secret=body["client_secret"], name=body["client_id"],
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=" ".join(body["redirect_uris"]), algorithm=Application.RS256_ALGORITHM,
        skip_authorization=bool(body.get("skip_authorization")))
    return JsonResponse({"ok": True})


@csrf_exempt
def revoke(request):
    """POST {user}: revoke every access and refresh token of USER."""
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    if not _admin(request) or request.method != "POST":
        return JsonResponse({"error": "forbidden"}, status=403)
    user = json.loads(request.body)["user"]
    n = 0
    for rt in get_refresh_token_model().objects.filter(user__username=user, revoked=None):
        rt.revoke()
        n += 1
    for at in get_access_token_model().objects.filter(user__username=user):
        at.revoke()
        n += 1
    return JsonResponse({"revoked": n})
