"""The executables, in one list: it feeds the dispatcher's --list, the man
pages and the completions.  name -> module under cubbi_tools.commands."""

COMMANDS = {
    "cubbi-create": "create",
    "cubbi-ls": "ls",
    "cubbi-close": "close",
    "cubbi-prune": "prune",
    "cubbi-connect": "connect",
    "cubbi-logs": "logs",
    "cubbi-events": "events",
    "cubbi-config": "config",
    "cubbi-remote": "remote",
    "cubbi-server": "server",
    "cubbi-project": "project",
    "cubbi-image": "image",
    "cubbi-mcp": "mcp",
    "cubbi-ssh": "ssh",
    "cubbi-ssh-config": "ssh_config",
}


def load(name):
    import importlib

    return importlib.import_module(f"cubbi_tools.commands.{COMMANDS[name]}").COMMAND
