from django.apps import AppConfig


class ProviderConfig(AppConfig):
    name = "oidc_provider"
    label = "oidc_provider"

    def ready(self):
        # Authentik lets one provider use the authorization code and the
        # device grant; django-oauth-toolkit gives an application one grant
        # type.  The test provider's applications allow both.
        from oauth2_provider.models import AbstractApplication

        both = {AbstractApplication.GRANT_AUTHORIZATION_CODE, AbstractApplication.GRANT_DEVICE_CODE}

        def allows_grant_type(app, *grant_types):
            if app.authorization_grant_type in both:
                return bool(both & set(grant_types))
            return app.authorization_grant_type in grant_types

        AbstractApplication.allows_grant_type = allows_grant_type
