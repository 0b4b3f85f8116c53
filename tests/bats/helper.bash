# Shared setup for the bats suites: load it with `load helper`.
#
# The suites run the commands exactly as a user types them, pipes included,
# against whatever backend the environment names: the local engine, or a
# cubbi-server when CUBBI_REMOTE is set (tests/run runs them both ways).
# So a test talks to cubbi only; the one allowed `docker` use is in a test
# that starts with `skip_if_remote`, which is also the only allowed skip.
#
# Every session a file makes is named "$PREFIX-..." (PREFIX unique per file
# run), and only those are closed at the end: other people and parallel runs
# use the same engine.

bats_require_minimum_version 1.5.0

REPO_ROOT="$(cd "$BATS_TEST_DIRNAME/../.." && pwd)"
export REPO_ROOT
# the checkout's executables and package win over an older install
export PATH="$REPO_ROOT/bin:$PATH"
export PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}"
export NO_COLOR=1
unset CUBBI_DEBUG

BB="${CUBBI_TEST_IMAGE:-cubbi-test/busybox:latest}"
export BB

skip_if_remote() {
    if [ -n "${CUBBI_REMOTE:-}" ]; then
        skip "local engine only: ${1:-uses the host directly}"
    fi
}

is_remote() { [ -n "${CUBBI_REMOTE:-}" ]; }

# is_swarm: the server is in docker.mode: swarm (tests/swarmharness.py
# serve says so), for what swarm mode refuses on purpose
is_swarm() { [ -n "${CUBBI_TEST_SWARM:-}" ]; }

# ensure_test_image: the tiny busybox image the sessions run (no registry:
# made from the host's static busybox).  Test-machine setup, not a test: the
# server a remote run talks to uses this machine's engine too.
ensure_test_image() {
    docker image inspect "$BB" >/dev/null 2>&1 && return 0  # lint: ok, control flow: made already
    local bb root
    bb=$(command -v busybox) || { echo "need busybox-static on the host" >&2; return 1; }
    root=$(mktemp -d)
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
    # the tar's "." is the image's /: mktemp -d made it 0700, which a
    # session user who is not root could not even look into
    chmod 0755 "$root"
    chmod 1777 "$root/tmp"
    cp "$bb" "$root/bin/busybox"
    for a in $("$bb" --list); do
        [ "$a" = busybox ] || ln -s busybox "$root/bin/$a"
    done
    echo "root:x:0:0:root:/root:/bin/sh" > "$root/etc/passwd"
    echo "root:x:0:" > "$root/etc/group"
    tar -C "$root" -c . | docker import - "$BB" >/dev/null
    local rc=$?
    rm -rf "$root"
    return $rc
}

# common_setup_file: call from setup_file.
common_setup_file() {
    PREFIX="b$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    export PREFIX
    if [ -z "${CUBBI_CONFIG_DIR:-}" ]; then
        CUBBI_CONFIG_DIR="$BATS_FILE_TMPDIR/cubbi-config"
        mkdir -p "$CUBBI_CONFIG_DIR"
        export CUBBI_CONFIG_DIR
    fi
    ensure_test_image
}

# common_teardown_file: close this file's sessions, and only those (in a
# remote run also the local ones a test made with -r local).
common_teardown_file() {
    cubbi-ls -q --all --filter "name=$PREFIX*" 2>/dev/null | cubbi-close -q >/dev/null 2>&1 || true
    if is_remote; then
        cubbi-ls -r local -q --all --filter "name=$PREFIX*" 2>/dev/null |
            cubbi-close -r local -q >/dev/null 2>&1 || true
    fi
}

# name WORD: a session name unique to this file run and test
name() { echo "$PREFIX-$BATS_TEST_NUMBER-$1"; }

# new_session WORD [cubbi-create switches...]: create one, print its id
new_session() {
    local n=$1
    shift
    cubbi-create --image "$BB" --name "$(name "$n")" --no-mount -q "$@"
}

# state_of NAME [SWITCHES...]: "STATUS<TAB>REASON" of the session NAME, as
# cubbi-ls --all tells it (nothing once it is gone)
state_of() {
    local -
    set -o pipefail
    cubbi-ls --json --all --filter "name=$1" "${@:2}" | jq -r '[.status, .reason] | @tsv'
}

# error_lines STATUS N: the bad-input contract on the last `run
# --separate-stderr`: exit STATUS, N lines on stderr (one per bad input),
# no Python traceback.  The suite's only copy of that check.
error_lines() {
    [ "$status" -eq "$1" ] || { echo "status $status, want $1; stderr: $stderr" >&2; return 1; }
    [ "$(printf '%s\n' "$stderr" | grep -c .)" -eq "$2" ] || {
        echo "want $2 stderr line(s): $stderr" >&2
        return 1
    }
    case $stderr in *Traceback*) echo "traceback: $stderr" >&2; return 1 ;; esac
}

# one_line_error STATUS: error_lines STATUS 1
one_line_error() { error_lines "$1" 1; }

# wait_until SECONDS CMD...: run CMD until it succeeds, for SECONDS at most;
# then fail saying what never happened.  Wait on a signal this way, never
# with a bare sleep.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "waited in vain for: $*" >&2
            return 1
        fi
        sleep 0.1
    done
}
