"""Declarative command definitions, shared by the executables, the man pages
and the shell completions (one definition per switch, ripgrep-style).

Built on argparse (stdlib, ~2 ms) rather than plumbum.cli (~90 ms measured
here), so a command that talks to the engine starts well under 200 ms.
Usage errors: one line on stderr, exit 2.  CubbiError: one line, its code.
A broken pipe (`cubbi-ls | head -1`) exits 0.  CUBBI_DEBUG=1 shows tracebacks.
"""

import argparse
import os
import sys

from .errors import USAGE, CubbiError


class Opt:
    """One switch.  kind: flag | value | multi (repeatable) | count."""

    def __init__(self, *flags, dest=None, help="", metavar=None, kind="flag",
                 choices=None, default=None, complete=None, type=None):
        self.flags = flags
        self.dest = dest or max(flags, key=len).lstrip("-").replace("-", "_")
        self.help = help
        self.metavar = metavar
        self.kind = kind
        self.choices = choices
        self.default = default
        self.complete = complete  # file | dir | session | image | network | remote | project | None
        self.type = type

    @property
    def takes_value(self):
        return self.kind in ("value", "multi")

    def add_to(self, parser):
        kw = {"dest": self.dest, "help": self.help}
        if self.kind == "flag":
            kw["action"] = "store_true"
            kw["default"] = bool(self.default)
        elif self.kind == "count":
            kw["action"] = "count"
            kw["default"] = 0
        else:
            kw["metavar"] = self.metavar or self.dest.upper()
            if self.choices:
                kw["choices"] = self.choices
            if self.type:
                kw["type"] = self.type
            if self.kind == "multi":
                kw["action"] = "append"
                kw["default"] = list(self.default or [])
            else:
                kw["default"] = self.default
        parser.add_argument(*self.flags, **kw)


class Arg:
    """One positional argument.  nargs as argparse: None, '?', '*', '+'."""

    def __init__(self, name, help="", nargs=None, complete=None, metavar=None):
        self.name = name
        self.help = help
        self.nargs = nargs
        self.complete = complete
        self.metavar = metavar or name.upper()

    def add_to(self, parser):
        kw = {"help": self.help, "metavar": self.metavar}
        if self.nargs is not None:
            kw["nargs"] = self.nargs
        if self.nargs == "*":  # without a default argparse calls it required
            kw["default"] = []
        parser.add_argument(self.name, **kw)


JSON = Opt("--json", help="print one JSON object per line (JSON Lines), nothing else on stdout")
QUIET = Opt("-q", "--quiet", help="print session ids only, one per line")
REMOTE = Opt("-r", "--remote", kind="value", metavar="NAME", complete="remote",
             help="work against the Cubbi Service NAME (see cubbi-remote); default: "
                  "$CUBBI_REMOTE, else remote.default, else the local engine (-r local)")


class _Parser(argparse.ArgumentParser):
    _argv = ()

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def _unknown_switches(self):
        """The switches of this parser's words that it does not know (before --)."""
        out = []
        for word in self._argv:
            if word == "--":
                break
            if word.startswith("-") and word != "-" and \
                    word.split("=", 1)[0] not in self._option_string_actions:
                out.append(word)
        return out

    def error(self, message):
        unknown = self._unknown_switches()
        if unknown and message.startswith("the following arguments are required"):
            message = f"unrecognized arguments: {' '.join(unknown)}"  # the cause, said first
        sys.stderr.write(f"{self.prog}: {message} (see {self.prog} --help)\n")
        sys.exit(USAGE)


class Command:
    """A command: its metadata (for --help, man and completions) and run()."""

    def __init__(self, name, summary, run, description="", options=(), args=(),
                 examples=(), sections=(), see_also=(), subcommands=None):
        self.name = name
        self.summary = summary
        self.run = run
        self.description = description
        self.options = list(options)
        self.args = list(args)
        self.examples = list(examples)      # [(command line, what it does)]
        self.sections = list(sections)      # [(HEADING, text)] extra man sections
        self.see_also = list(see_also)
        self.subcommands = subcommands      # {name: (summary, [Opt], [Arg])} or None

    def parser(self):
        p = _Parser(prog=self.name, description=self.summary,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    epilog="\n".join(f"  {c}\n      {w}" for c, w in self.examples) and
                    "examples:\n" + "\n".join(f"  {c}\n      {w}" for c, w in self.examples))
        if self.subcommands:
            for opt in self.options:
                opt.add_to(p)
            sub = p.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser)
            sub.required = True
            for sname, (ssummary, sopts, sargs) in self.subcommands.items():
                sp = sub.add_parser(sname, help=ssummary, description=ssummary)
                for opt in sopts:
                    opt.add_to(sp)
                for arg in sargs:
                    arg.add_to(sp)
            return p
        for opt in self.options:
            opt.add_to(p)
        for arg in self.args:
            arg.add_to(p)
        return p

    def main(self, argv=None):
        sys.exit(run_main(self, argv))


def run_main(command, argv=None):
    """Run a command and return its exit code, mapping errors to codes."""
    debug = debugging()
    _std_streams()
    try:
        args = command.parser().parse_args(argv)
        code = command.run(args) or 0
        sys.stdout.flush()
        return code
    except SystemExit as exc:  # argparse --help / usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except CubbiError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        _flush_quietly()
        sys.stderr.write(prefixed(command.name, exc))
        return exc.code
    except KeyboardInterrupt:
        _flush_quietly()
        sys.stderr.write(f"{command.name}: interrupted\n")
        return 130
    except Exception as exc:  # a bug: still one line unless debugging
        if debug:
            raise
        _flush_quietly()
        sys.stderr.write(f"{command.name}: internal error: {type(exc).__name__}: {exc} "
                         "(run again with CUBBI_DEBUG=1 for details)\n")
        return 1


def prefixed(prog, text):
    """TEXT (an error of one line or several, e.g. every problem of an image
    definition) with each line starting PROG: ."""
    return "".join(f"{prog}: {line}\n" for line in str(text).splitlines() or [""])


def debugging():
    return os.environ.get("CUBBI_DEBUG") not in (None, "", "0")


class Tally:
    """The failures of a command that carries on after each one (cubbi-close
    ID..., cubbi-logs ID...): each is reported as one stderr line when it
    happens, and code() sums them up for the exit status: 0 with none, their
    common code when they share one (3: every session was unknown), else 1.
    on_fail(ref, exc) is called too, e.g. to print a JSON result line."""

    def __init__(self, prog, on_fail=None):
        self.prog = prog
        self.on_fail = on_fail
        self.codes = set()

    def failed(self, ref, exc):
        if isinstance(exc, CubbiError):
            code, text = exc.code, str(exc)
        else:  # a bug: still one line unless debugging
            code, text = 1, f"internal error: {type(exc).__name__}: {exc}"
        self.codes.add(code)
        if self.on_fail:
            self.on_fail(ref, exc)
        if debugging():
            import traceback

            traceback.print_exception(type(exc), exc, exc.__traceback__)
        _flush_quietly()
        if ref and str(ref) not in text:
            text = f"{ref}: {text}"
        sys.stderr.write(prefixed(self.prog, text))
        sys.stderr.flush()

    def code(self):
        if not self.codes:
            return 0
        return next(iter(self.codes)) if len(self.codes) == 1 else 1


def _std_streams():
    """A closed stdin/stdout/stderr (`cmd <&-`, CI without standard input)
    becomes /dev/null, so isatty() and writes work and children inherit it."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        setattr(sys, name, open(fd, mode, closefd=False))


def _silence_stdout():
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _flush_quietly():
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        _silence_stdout()


def output_format(args):
    if getattr(args, "json", False):
        return "json"
    if getattr(args, "quiet", False):
        return "quiet"
    return "table"
