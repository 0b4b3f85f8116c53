"""Image resolution: image definitions (images/<name>/) and plain images."""

from .dockerapi import APIError
from .errors import NotFound


def ensure_image(engine, name, progress=None):
    """(docker image reference, image metadata) for --image NAME; a plain
    local Docker image reference works as it is."""
    try:
        engine.api.inspect_image(name)
    except APIError as exc:
        if exc.status != 404:
            raise
        raise NotFound(f"unknown image {name!r}: no image definition and no local Docker "
                       "image by that name; see cubbi-image list or docker images") from None
    return name, {}
