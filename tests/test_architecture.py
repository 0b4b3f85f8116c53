"""The layer table of ARCHITECTURE.md, enforced: every import (lazy ones
too) goes to the same layer or below, the imports form no circle, and no
module takes a private name (`_x`) from another.  Stdlib ast only."""

import importlib.util
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _graph_module():
    spec = importlib.util.spec_from_file_location(
        "import_graph", os.path.join(ROOT, "bench", "import_graph.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def layers():
    """{module or package prefix: layer} from the table in ARCHITECTURE.md."""
    with open(os.path.join(ROOT, "ARCHITECTURE.md"), encoding="utf-8") as fh:
        text = fh.read()
    out = {"cubbi_tools": 0, "cubbi_server": 0}
    for line in text.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|[^|]*\|([^|]*)\|\s*$", line)
        if not m:
            continue
        for name in re.findall(r"`([^`]+)`", m.group(2)):
            full = name if name.startswith("cubbi_server") else f"cubbi_tools.{name}"
            out[full] = int(m.group(1))
    return out


def layer_of(mod, table):
    """The layer of MOD: its own entry, else that of `pkg.*` it falls under."""
    if mod in table:
        return table[mod]
    parts = mod.split(".")
    for i in range(len(parts) - 1, 0, -1):
        star = ".".join(parts[:i]) + ".*"
        if star in table:
            return table[star]
    return None


def violations(edges, table=None):
    """Every import against the table, as text; a module missing from the
    table is one too."""
    table = layers() if table is None else table
    out = []
    for mod in sorted(edges):
        mine = layer_of(mod, table)
        if mine is None:
            out.append(f"{mod} is not in the layer table of ARCHITECTURE.md")
            continue
        for dep in sorted(edges[mod]):
            theirs = layer_of(dep, table)
            if theirs is not None and theirs > mine:
                out.append(f"{mod} (layer {mine}) imports {dep} (layer {theirs})")
    return out


def test_every_import_goes_down_the_layer_table():
    _, edges, _, _ = _graph_module().graph(ROOT)
    assert violations(edges) == []


def test_no_import_circles():
    g = _graph_module()
    _, edges, _, _ = g.graph(ROOT)
    assert g.circles(edges) == []


def test_no_private_names_across_modules():
    _, _, _, privates = _graph_module().graph(ROOT)
    assert [f"{m}:{line}: {text}" for m, line, text in privates] == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The checker itself: an upward lazy import, a circle and a private
    name in a made-up tree are all reported."""
    pkg = tmp_path / "cubbi_tools"
    pkg.mkdir()
    (tmp_path / "server").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("def f():\n    from . import output\n")
    (pkg / "output.py").write_text("from . import errors\nx = errors._hidden\n")
    (pkg / "nowhere.py").write_text("")
    g = _graph_module()
    _, edges, lazy, privates = g.graph(tmp_path)
    assert "cubbi_tools.output" in lazy["cubbi_tools.errors"]
    assert g.circles(edges) == [["cubbi_tools.errors", "cubbi_tools.output"]]
    assert [t for _, _, t in privates] == ["cubbi_tools.errors._hidden"]
    found = violations(edges, {"cubbi_tools": 0, "cubbi_tools.errors": 0,
                               "cubbi_tools.output": 1})
    assert found == ["cubbi_tools.errors (layer 0) imports cubbi_tools.output (layer 1)",
                     "cubbi_tools.nowhere is not in the layer table of ARCHITECTURE.md"]


def test_both_backends_have_the_interface_with_the_same_signatures():
    import inspect

    from cubbi_tools.engine import LocalEngine
    from cubbi_tools.interface import Backend
    from cubbi_tools.remote import RemoteService

    names = [n for n, v in vars(Backend).items()
             if not n.startswith("_") and (callable(v) or isinstance(v, property))]
    assert {"list", "resolve", "create", "close", "logs", "wait_ready", "connect",
            "index", "project_setup", "images", "image", "projects"} <= set(names)
    for name in names:
        want = vars(Backend)[name]
        for cls in (LocalEngine, RemoteService):
            have = inspect.getattr_static(cls, name)
            if isinstance(want, property):
                assert isinstance(have, property), (cls.__name__, name)
                continue
            assert inspect.signature(have) == inspect.signature(want).replace(
                return_annotation=inspect.Signature.empty), (cls.__name__, name)


def test_the_hot_path_stays_lazy(tmp_path):
    """cubbi-ls's imports, the backend chosen: none of the heavy or
    rarely-needed modules (typing for the interface, yaml and keyring for
    settings and secrets, http.client, tarfile, images, the remote client)."""
    import subprocess
    import sys

    code = ("import sys; import cubbi_tools.commands.ls; from cubbi_tools import backend; "
            "backend.get(None); heavy = ['typing', 'yaml', 'keyring', 'http.client', 'tarfile', "
            "'cubbi_tools.interface', 'cubbi_tools.images', 'cubbi_tools.remote']; "
            "print(' '.join(m for m in heavy if m in sys.modules))")
    env = dict(os.environ, CUBBI_CONFIG_DIR=str(tmp_path), PYTHONPATH=ROOT)
    env.pop("CUBBI_REMOTE", None)
    env.pop("CUBBI_REMOTE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "", out


def test_only_the_edge_reads_the_user_config():
    """Settings are read at the edge (backend, service, commands) and passed
    down: no module below layer 6 imports config, so the server never reads
    the personal config of the account running it."""
    _, edges, _, _ = _graph_module().graph(ROOT)
    table = layers()
    readers = sorted(m for m, deps in edges.items()
                     if "cubbi_tools.config" in deps and (layer_of(m, table) or 0) < 6)
    assert readers == []


def test_a_module_over_500_lines_says_why_at_its_top():
    """ARCHITECTURE.md: files stay small; one over ~500 lines states its
    reason in its docstring, as "(Over 500 lines: ...)"."""
    import ast as _ast
    import glob

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    silent = []
    for path in sorted(glob.glob(os.path.join(root, "cubbi_tools", "**", "*.py"), recursive=True)
                       + glob.glob(os.path.join(root, "server", "*.py"))):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        if text.count("\n") > 500:
            doc = _ast.get_docstring(_ast.parse(text)) or ""
            if "Over 500 lines:" not in doc:
                silent.append(os.path.relpath(path, root))
    assert not silent, f"over 500 lines with no reason at the top: {silent}"
