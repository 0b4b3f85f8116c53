"""The standalone binary's entry (dist/build, PyInstaller): one `cubbi`
executable that is every command, busybox-style.

    cubbi-ls ARGS            (a link named cubbi-ls) runs cubbi-ls
    cubbi ls ARGS            the dispatcher of bin/cubbi, in-process
    cubbi --install-links DIR
                             DIR/bin/cubbi-* links to this executable, and
                             DIR/share/ the man pages and completions

The dispatcher is bin/cubbi itself (stdlib only), given as a module; here
its lookups learn the commands built in, so `cubbi ls` runs cubbi-ls
without a file on PATH, `cubbi help ls` shows the man page inside, and any
other cubbi-X on PATH is still a plugin.  The built-in image definitions,
the init scripts, man pages and completions sit in the bundle beside the
package (sys._MEIPASS), where the code finds them by __file__ as in a
checkout.
"""

import os
import sys

from .commands import COMMANDS, load


NOT_BUILT_IN = {"cubbi-server": "the server (it needs bottle and gevent): install "
                                "cubbi[server] with pip or pipx for it"}


def built_in():
    """The commands this executable is (the binary leaves the server out)."""
    frozen = getattr(sys, "frozen", False)
    return sorted(n for n in COMMANDS if not (frozen and n in NOT_BUILT_IN))


def bundle():
    """The folder with man/ and completions/: the binary's bundle, else the
    checkout (running from source)."""
    return getattr(sys, "_MEIPASS", None) or os.path.dirname(
        os.path.dirname(os.path.abspath(__file__)))


def run_command(name, argv):
    """Run the command NAME (cubbi-ls, ...) in this process, and exit."""
    if name not in built_in():
        sys.stderr.write(f"{name}: not in this binary: {NOT_BUILT_IN.get(name, name)}\n")
        sys.exit(1)
    try:
        command = load(name)
    except ImportError as exc:
        sys.stderr.write(f"{name}: not in this binary (it needs the Python module "
                         f"{exc.name or exc}); install cubbi with pip for it\n")
        sys.exit(1)
    sys.argv = [name] + list(argv)
    command.main(list(argv))


def adapt(dispatcher):
    """Teach bin/cubbi's dispatcher (a module) the commands built in."""
    find, run, subcommands = dispatcher.find, dispatcher.run, dispatcher.subcommands

    def find_builtin(sub):
        return f"cubbi-{sub}" if f"cubbi-{sub}" in built_in() else find(sub)

    def run_builtin(sub, args):
        if f"cubbi-{sub}" in built_in():
            run_command(f"cubbi-{sub}", args)
        run(sub, args)

    # its man pages are HERE/../man: bundle/man (a folder that exists, for the ..)
    dispatcher.here = lambda: os.path.join(bundle(), "man")
    dispatcher.find = find_builtin
    dispatcher.run = run_builtin
    dispatcher.subcommands = lambda: sorted(set(subcommands()) |
                                            {n[len("cubbi-"):] for n in built_in()})
    return dispatcher


# where --install-links puts what, as pyproject.toml's data-files for pip
SHARE = (("man", "share/man/man1", ".1"), ("man", "share/man/man5", ".5"),
         ("completions/bash", "share/bash-completion/completions", ""),
         ("completions", "share/bash-completion/completions", ".bash"),
         ("completions", "share/zsh/site-functions", "_cubbi"),
         ("completions/fish", "share/fish/vendor_completions.d", ".fish"),
         ("completions", "share/fish/vendor_completions.d", ".fish"))


# a pip, pipx or uv install has them as pyproject.toml's data-files, under sys.prefix
INSTALLED = ("share/man/man1", "share/man/man5", "share/bash-completion/completions",
             "share/zsh/site-functions", "share/fish/vendor_completions.d")


def shared_files():
    """[(file, folder under the prefix)]: the man pages and completions of
    the bundle or checkout (man/, completions/), else of the install."""
    left_out = [n for n in COMMANDS if n not in built_in()]
    out = []
    if os.path.isdir(os.path.join(bundle(), "man")):
        for src, dst, pattern in SHARE:
            folder = os.path.join(bundle(), src)
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            out += [(os.path.join(folder, n), dst) for n in names
                    if os.path.isfile(os.path.join(folder, n))
                    and (n.endswith(pattern) or n == pattern or pattern == "")]
    else:
        for dst in INSTALLED:
            folder = os.path.join(sys.prefix, dst)
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            out += [(os.path.join(folder, n), dst) for n in names
                    if n.startswith(("cubbi", "_cubbi"))]
    return [(f, d) for f, d in out if not any(n in os.path.basename(f) for n in left_out)]


def install_links(argv):
    """cubbi --install-links DIR: DIR/bin/cubbi and DIR/bin/cubbi-* as
    symbolic links (to this executable, or to the installed scripts of a
    pip, pipx or uv install), and the man pages and completions copied
    under DIR/share (a prefix such as ~/.local or /usr/local, whose
    share/man man finds through PATH, and whose share/bash-completion,
    zsh/site-functions and fish/vendor_completions.d the shells read)."""
    import shutil

    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("cubbi: usage: cubbi --install-links DIR (e.g. ~/.local)\n")
        sys.exit(2)
    prefix = os.path.abspath(os.path.expanduser(argv[0]))
    frozen = getattr(sys, "frozen", False)
    here = os.path.dirname(os.path.realpath(sys.executable if frozen else sys.argv[0]))
    bindir = os.path.join(prefix, "bin")
    links = files = 0
    try:
        os.makedirs(bindir, exist_ok=True)
        for name in ["cubbi"] + built_in():
            target = os.path.realpath(sys.executable) if frozen else os.path.join(here, name)
            path = os.path.join(bindir, name)
            if not os.path.exists(target) or (os.path.realpath(path) == target
                                              and not os.path.islink(path)):
                continue  # not installed here, or the file itself
            tmp = path + ".cubbi-tmp"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(target, tmp)
            os.replace(tmp, path)
            links += 1
        for src, dst in shared_files():
            os.makedirs(os.path.join(prefix, dst), exist_ok=True)
            shutil.copyfile(src, os.path.join(prefix, dst, os.path.basename(src)))
            files += 1
    except OSError as exc:
        sys.stderr.write(f"cubbi: --install-links {argv[0]}: {exc.strerror}: "
                         f"{exc.filename}\n")
        sys.exit(1)
    sys.stderr.write(f"cubbi: {links} links in {bindir}, {files} man pages and completions "
                     f"in {os.path.join(prefix, 'share')}\n")
    sys.exit(0)


def main(dispatcher):
    """The binary's entry: by the name it was started as."""
    name = os.path.basename(sys.argv[0])
    if name in COMMANDS:  # cubbi-server too: it says it is not built in
        run_command(name, sys.argv[1:])
    args = sys.argv[1:]
    if args[:1] == ["--install-links"]:
        install_links(args[1:])
    adapt(dispatcher).main(args)
