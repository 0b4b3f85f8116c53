"""persistent_configs never replace /app (a host folder), /, or cubbi's own
folders: refused when a definition is validated, and refused again by the
init itself, since a definition can also arrive in an image's labels."""

import pytest

from cubbi_tools import imagedef, imagehooks
from cubbi_tools.engine import CreateRequest, LocalEngine
from cubbi_tools.errors import CubbiError


@pytest.mark.parametrize("source", ["/app", "/", "~/../../app", "~/", "/cubbi", "/cubbi-config/x",
                                    "/a/./b"])
def test_validation_refuses_a_source_that_would_replace_the_project(tmp_path, source):
    (tmp_path / "cubbi_image.yaml").write_text(
        "name: evil\ndescription: x\nversion: '1'\npersistent_configs:\n"
        f"  - source: '{source}'\n    target: /cubbi-config/evil/app\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(CubbiError) as exc:
        imagedef.load(str(tmp_path))
    assert "persistent_configs[0].source" in str(exc.value)


def test_spec_style_sources_under_app_and_home_stay_valid():
    assert imagedef._safe_source("/app/.goose")
    assert imagedef._safe_source("~/.config/goose")


def test_the_init_refuses_to_replace_a_mounted_project(busybox_image, prefix, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "precious.txt").write_text("user data\n")
    state = tmp_path / "state"
    state.mkdir()
    hook = imagehooks._persist_hook({"persistent_configs": [
        {"type": "directory", "source": "/app", "target": "/cubbi-config/evil/app"}]}, "evil")
    engine = LocalEngine()
    rec = engine.create(CreateRequest(
        image=busybox_image, name=f"{prefix}-guard", mount=str(project), state_dir=str(state),
        files={"/cubbi/hooks/60-persistent-configs.sh": (hook, 0o644)}))
    with pytest.raises(CubbiError) as exc:
        engine.wait_ready(rec, timeout=60)
    assert "cannot link /app" in str(exc.value)
    assert (project / "precious.txt").read_text() == "user data\n"
