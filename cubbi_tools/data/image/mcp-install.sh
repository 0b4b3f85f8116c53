# cubbi: shell functions that merge a session's MCP servers into a tool's
# config (cubbi_tools/mcptools.py writes the fragments).  POSIX sh; run as
# the session user.  Each leaves the rest of the tool's file as it was.

# _mcp_dir FILE: make FILE's folder
_mcp_dir() { mkdir -p "$(dirname "$1")"; }

# _mcp_copy TARGET FRAGMENT: TARGET becomes FRAGMENT (0600)
_mcp_copy() {
    _mcp_dir "$1" && cp "$2" "$1.cubbi-new" && chmod 0600 "$1.cubbi-new" && mv -f "$1.cubbi-new" "$1"
}

# _mcp_json_merge TARGET KEY FRAGMENT: TARGET[KEY] gets FRAGMENT's entries
# (a JSON object of servers), other keys and servers kept; with node or
# python3, else only into a TARGET that does not exist yet
_mcp_json_merge() {
    _mcp_dir "$1" || return 1
    if command -v node >/dev/null 2>&1; then
        node -e '
const fs = require("fs");
const [target, key, frag] = process.argv.slice(1);
let doc = {};
try { doc = JSON.parse(fs.readFileSync(target, "utf8")); } catch (e) { if (e.code !== "ENOENT") throw e; }
doc[key] = Object.assign({}, doc[key] || {}, JSON.parse(fs.readFileSync(frag, "utf8")));
fs.writeFileSync(target + ".cubbi-new", JSON.stringify(doc, null, 2) + "\n", {mode: 0o600});
fs.renameSync(target + ".cubbi-new", target);
' "$1" "$2" "$3"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -c '
import json, os, sys
target, key, frag = sys.argv[1:]
try:
    doc = json.load(open(target))
except FileNotFoundError:
    doc = {}
doc[key] = {**(doc.get(key) or {}), **json.load(open(frag))}
with open(os.open(target + ".cubbi-new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
    json.dump(doc, fh, indent=2)
    fh.write("\n")
os.replace(target + ".cubbi-new", target)
' "$1" "$2" "$3"
    elif [ ! -e "$1" ]; then
        { printf '{"%s": ' "$2"; cat "$3"; printf '}\n'; } > "$1.cubbi-new" && chmod 0600 "$1.cubbi-new" \
            && mv -f "$1.cubbi-new" "$1"
    else
        echo "cubbi-init: $1 exists and neither node nor python3 is here to merge into it" >&2
        return 1
    fi
}

# _mcp_toml_block TARGET FRAGMENT: cubbi's block of TARGET (between its
# marker lines) replaced by FRAGMENT
_mcp_toml_block() {
    _mcp_dir "$1" || return 1
    {
        [ -f "$1" ] && awk '/^# >>> cubbi mcp/{skip=1} !skip{print} /^# <<< cubbi mcp/{skip=0}' "$1"
        echo "# >>> cubbi mcp (written at each session start; edits here are lost)"
        cat "$2"
        echo "# <<< cubbi mcp"
    } > "$1.cubbi-new" && chmod 0600 "$1.cubbi-new" && mv -f "$1.cubbi-new" "$1"
}

# _mcp_goose_extensions TARGET FRAGMENT NAMES: the extensions NAMES of
# goose's config.yaml replaced by FRAGMENT's lines (`  NAME: {...}`)
_mcp_goose_extensions() {
    _mcp_dir "$1" || return 1
    [ -f "$1" ] || : > "$1"
    awk -v names=" $3 " -v frag="$2" '
        function indent(s) { match(s, /^ */); return RLENGTH }
        function add() { while ((getline l < frag) > 0) print l; added = 1 }
        BEGIN { inext = 0; drop = 0; added = 0 }
        /^extensions:[ ]*(\{\})?[ ]*$/ { print "extensions:"; inext = 1; add(); next }
        inext && /^[^ #]/ { inext = 0 }
        inext {
            if (drop && (indent($0) > 2 || $0 ~ /^[ ]*$/)) next
            drop = 0
            if (indent($0) == 2) {
                key = substr($0, 3); sub(/:.*/, "", key)
                if (index(names, " " key " ")) { drop = 1; next }
            }
        }
        { print }
        END { if (!added) { print "extensions:"; add() } }
    ' "$1" > "$1.cubbi-new" && chmod 0600 "$1.cubbi-new" && mv -f "$1.cubbi-new" "$1"
}
