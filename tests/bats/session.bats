#!/usr/bin/env bats
# The session lifecycle as a user types it, pipes included.  Backend-agnostic:
# runs against the local engine, and again with CUBBI_REMOTE set.

load helper

setup_file() { common_setup_file; }
teardown_file() { common_teardown_file; }

teardown() {
    # what a test started in the background ends with it, failed or not:
    # scoped-engine, the port holder, a followed cubbi-logs (under timeout,
    # which passes the signal on)
    local pid
    for pid in ${SCOPED:-} ${HOLDER:-} ${FOLLOWER:-}; do
        kill "$pid" 2>/dev/null || true
    done
}

@test "create prints the record off a terminal, ls shows it three ways" {
    run --separate-stderr cubbi-create --image "$BB" --name "$(name a)" --no-mount --json
    [ "$status" -eq 0 ]
    id=$(jq -r .id <<<"$output")
    [ "$(jq -r .name <<<"$output")" = "$(name a)" ]
    [ "$(jq -r .image <<<"$output")" = "$BB" ]

    run -0 cubbi-ls -q --filter "name=$(name a)"
    [ "$output" = "$id" ]
    run -0 cubbi-ls --filter "name=$(name a)"
    [ "${lines[0]%% *}" = "ID" ]
    [[ "${lines[1]}" == "$id"*"$(name a)"* ]]
    run -0 bash -c 'cubbi-ls --json --filter "name=$1" | jq -r "[.id, .status] | @tsv"' _ "$(name a)"
    [[ "$output" == "$id"$'\t'* ]]
}

@test "cubbi-ls --json | jq select | cubbi-close closes just those" {
    a=$(new_session a)
    b=$(new_session b -e KEEP=1)
    c=$(new_session c)
    run --separate-stderr bash -c '
        cubbi-ls --json --filter "name=$PREFIX*" |
        jq -c --arg img "$BB" --arg a "$1" --arg c "$2" \
            "select(.image == \$img and (.name == \$a or .name == \$c))" |
        cubbi-close' _ "$(name a)" "$(name c)"
    [ "$status" -eq 0 ]
    [ -z "$output" ]
    [[ "$stderr" == *"closed $a"* ]]
    [[ "$stderr" == *"closed $c"* ]]
    run -0 cubbi-ls -q --filter "name=$PREFIX-$BATS_TEST_NUMBER-*"
    [ "$output" = "$b" ]
}

@test "cubbi-ls -q | cubbi-close --json: one result line per input" {
    new_session a >/dev/null
    new_session b >/dev/null
    run --separate-stderr bash -c 'cubbi-ls -q --filter "name=$PREFIX-$1-*" | cubbi-close --json' _ "$BATS_TEST_NUMBER"
    [ "$status" -eq 0 ]
    [ "${#lines[@]}" -eq 2 ]
    run -0 bash -c 'jq -s "map(.closed and .error == null and (keys == [\"closed\",\"error\",\"id\",\"name\"])) | all" <<<"$1"' _ "$output"
    [ "$output" = "true" ]
}

@test "cubbi-ls | head -1 exits 0, and so does every list into a closed pipe" {
    new_session a >/dev/null
    new_session b >/dev/null
    for pipe in 'cubbi-ls | head -1' 'cubbi-ls -q | head -1' 'cubbi-ls --json | head -1' \
                'cubbi-ls --all --json | true'; do
        run --separate-stderr bash -o pipefail -c "$pipe"
        [ "$status" -eq 0 ] || { echo "$pipe: $status $stderr"; false; }
        [ -z "$stderr" ]
    done
    run -0 bash -o pipefail -c 'cubbi-ls | head -1'
    [ "${output%% *}" = "ID" ]
}

@test "a malformed stdin line is reported for that line; the rest are closed" {
    a=$(new_session a)
    b=$(new_session b)
    run --separate-stderr bash -c 'printf "%s\n" "not an id" "$1" "{\"no\":\"id\"}" "$2" | cubbi-close -q' _ "$a" "$b"
    error_lines 2 2  # a malformed line is a usage error: one stderr line each
    [ "$output" = "$a"$'\n'"$b" ]
    [[ "$stderr" == *"stdin line 1"* ]]
    [[ "$stderr" == *"stdin line 3"* ]]
    run -0 cubbi-ls -q --all --filter "name=$PREFIX-$BATS_TEST_NUMBER-*"
    [ -z "$output" ]
}

@test "usage errors exit 2 with one line" {
    run -2 --separate-stderr cubbi-ls --bogus
    one_line_error 2
    [[ "$stderr" == *"--bogus"* ]]
    run -2 --separate-stderr cubbi-ls --filter colour=red
    one_line_error 2
    run -2 --separate-stderr cubbi-create --image "$BB" --name "$(name e)" --no-mount -e NOEQUALS
    one_line_error 2
    [[ "$stderr" == *NOEQUALS*KEY=VALUE* ]]
    run -2 --separate-stderr cubbi-create --image "$BB" --no-mount --port http
    one_line_error 2
    run -2 --separate-stderr cubbi frobnicate
    one_line_error 2
    run -0 cubbi-ls -q --all --filter "name=$PREFIX-$BATS_TEST_NUMBER-*"
    [ -z "$output" ]
}

@test "unknown sessions and images exit 3, an empty id 2" {
    run -3 --separate-stderr cubbi-close "$PREFIX-nosuch"
    one_line_error 3
    [[ "$stderr" == *"$PREFIX-nosuch"* ]]
    run -3 --separate-stderr cubbi-logs "$PREFIX-nosuch"
    one_line_error 3
    run -3 --separate-stderr cubbi-connect "$PREFIX-nosuch" -- true
    one_line_error 3
    run -3 --separate-stderr cubbi-create --image "$PREFIX/no-such-image" --name "$(name i)" --no-mount
    one_line_error 3
    run -2 --separate-stderr cubbi-connect "" -- true
    one_line_error 2
}

@test "cubbi-connect -- CMD passes stdin, stdout, stderr and the exit status" {
    a=$(new_session a --wait)
    run --separate-stderr bash -c 'echo hello | cubbi-connect "$1" -- sh -c "tr a-z A-Z; echo oops >&2; exit 7"' _ "$a"
    [ "$status" -eq 7 ]
    [ "$output" = "HELLO" ]
    [ "$stderr" = "oops" ]
    run -0 cubbi-connect "$(name a)" -- pwd
    [ "$output" = "/app" ]
    # like a shell pipeline: the reader goes, the writer gets 141 and is stopped
    run -0 bash -c 'cubbi-connect "$1" -- seq 1 100000000 | head -1; echo "${PIPESTATUS[0]}"' _ "$a"
    [ "$output" = $'1\n141' ]
    run -0 bash -c 'yes | cubbi-connect "$1" -- echo done' _ "$a"
    [ "$output" = "done" ]
    run -0 cubbi-connect "$a" -- ps -o args
    [[ "$output" != *seq* ]]
}

@test "environment: -e beats --env-file, and both reach the session" {
    printf 'A=from-file\nB="spaced value"\n' > "$BATS_TEST_TMPDIR/env"
    a=$(new_session a --env-file "$BATS_TEST_TMPDIR/env" -e A=from-cli --wait)
    run -0 cubbi-connect "$a" -- sh -c 'echo "$A|$B"'
    [ "$output" = "from-cli|spaced value" ]
}

@test "--port shows the host port in the record (swarm mode refuses it)" {
    if is_swarm; then
        # a swarm publishes a port on every interface of a node, which
        # policy.ports.bind forbids: refused, and nothing made (README, Scaling out)
        run --separate-stderr cubbi-create --image "$BB" --name "$(name p)" --no-mount --port 8000
        one_line_error 2
        [[ "$stderr" == *"ports are not published in swarm mode"* ]]
        run -0 cubbi-ls -q --all --filter "name=$(name p)"
        [ -z "$output" ]
    else
        run -0 --separate-stderr bash -c 'cubbi-create --image "$BB" --name "$1" --no-mount --port 8000 --json | jq -r ".ports[0] | [.container, .host, .host_ip] | @tsv"' _ "$(name p)"
        read -r cport hport hip <<<"$output"
        [ "$cport" = 8000 ]
        [ "$hport" -gt 0 ]
        [ "$hip" = 127.0.0.1 ]
        run -0 cubbi-ls --filter "name=$(name p)"
        [[ "$output" == *"$hport->8000"* ]]
    fi
}

@test "--run runs once ready; its status is cubbi-create's and the session stays" {
    run --separate-stderr cubbi-create --image "$BB" --name "$(name r)" --no-mount -q \
        --run 'echo ran-it; exit 3'
    [ "$status" -eq 3 ]
    [[ "$stderr" == *ran-it* ]]
    id=$output
    run -0 cubbi-ls -q --filter "name=$(name r)"
    [ "$output" = "$id" ]
}

@test "cubbi-logs: --json per line, --tail, and several sessions from stdin" {
    a=$(new_session a --wait)
    b=$(new_session b --wait)
    cubbi-connect "$a" -- sh -c 'echo out-a > /proc/1/fd/1'
    cubbi-connect "$b" -- sh -c 'echo out-b > /proc/1/fd/1'
    run -0 bash -c 'cubbi-logs --json "$1" | jq -r "select(.stream==\"stdout\") | .line"' _ "$a"
    [ "$output" = "out-a" ]
    run -0 bash -c 'cubbi-logs --tail 1 --json "$1" | jq -r .line' _ "$b"
    [ "$output" = "out-b" ]
    run -0 bash -c 'cubbi-ls --json --filter "name=$PREFIX-$1-*" | cubbi-logs --json | jq -r "select(.stream==\"stdout\") | [.session, .line] | @tsv" | sort' _ "$BATS_TEST_NUMBER"
    [ "$output" = "$(printf '%s\tout-a\n%s\tout-b\n' "$a" "$b" | sort)" ]
    run -0 cubbi-logs "$a" "$(name b)"
    [[ "$output" == *"$(name a) | out-a"* ]]
    [[ "$output" == *"$(name b) | out-b"* ]]
}

# log_line ID FD WORD: the session's init writes WORD to its fd FD: a log line
log_line() { cubbi-connect "$1" -- sh -c "echo $3 > /proc/1/fd/$2"; }

# followed ID FILE: cubbi-logs -f into FILE follows ID: a marker line written
# to ID's log arrived in FILE (written again until one does, for 30 s at most)
followed() {
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        log_line "$1" 1 "followed-$1"
        if wait_until 2 grep -q "followed-$1" "$2" 2>/dev/null; then
            return 0
        fi
    done
    echo "cubbi-logs -f never showed a line of $1" >&2
    return 1
}

@test "cubbi-logs -f interleaves sessions as lines arrive, ends when they close" {
    a=$(new_session a --wait)
    b=$(new_session b --wait)
    f="$BATS_TEST_TMPDIR/f.jsonl"
    timeout 60 cubbi-logs -f --json --tail 0 "$a" "$b" > "$f" 3>&- &
    FOLLOWER=$!
    followed "$a" "$f"
    followed "$b" "$f"
    # each line is written once the one before it has arrived: the order is
    # the order they were written in, and each arrives while -f runs
    log_line "$a" 1 one
    wait_until 20 grep -q '"one"' "$f"
    log_line "$b" 1 two
    wait_until 20 grep -q '"two"' "$f"
    log_line "$a" 2 three
    wait_until 20 grep -q '"three"' "$f"
    cubbi-close -q "$a" "$b" >/dev/null
    wait "$FOLLOWER"  # ends by itself (not the timeout's 124) once both are closed
    run -0 jq -r 'select(.line | startswith("followed-") | not) | [.session, .stream, .line] | @tsv' "$f"
    [ "$output" = "$a"$'\tstdout\tone\n'"$b"$'\tstdout\ttwo\n'"$a"$'\tstderr\tthree' ]
}

@test "the dispatcher: cubbi ls, cubbi session ..., cubbi --list" {
    run -0 cubbi session create --image "$BB" --name "$(name d)" --no-mount -q
    id=$output
    run -0 cubbi ls -q --filter "name=$(name d)"
    [ "$output" = "$id" ]
    run -0 cubbi session list --json --filter "name=$(name d)"
    [ "$(jq -r .id <<<"$output")" = "$id" ]
    run -0 cubbi session connect "$id" -- echo hi
    [ "$output" = "hi" ]
    run -0 cubbi --list
    for c in create ls close connect logs; do grep -qx "$c" <<<"$output"; done
    run -0 cubbi help ls
    [[ "$output" == *cubbi-ls* ]]
    run -0 --separate-stderr cubbi session close "$id"
    run -0 cubbi ls -q --all --filter "name=$(name d)"
    [ -z "$output" ]
}

@test "a script's life: id=\$(cubbi-create -q), work in it, close it" {
    run -0 bash -c '
        set -e
        id=$(cubbi-create -q --no-mount --no-connect --image "$BB" --name "$1" --wait)
        cubbi-connect "$id" -- sh -c "echo \$((6*7))"
        cubbi-close -q "$id"' _ "$(name s)"
    [ "${#lines[@]}" -eq 2 ]
    [ "${lines[0]}" = 42 ]
    run -0 cubbi-ls -q --all --filter "name=$(name s)"
    [ -z "$output" ]
}

is_stopped() { [ "$(state_of "$1" | cut -f1)" = stopped ]; }


@test "cubbi-close --all closes every session it can see, stopped ones too, and no other" {
    # Locally --all is every session on the engine, and a test machine's
    # engine is shared: here cubbi-close reaches it through scoped-engine,
    # which shows only this test's "-all-" sessions and refuses to touch any
    # other container.  Through a server, --all is the user's sessions on
    # that service: a local session, of the same owner even, is not one.
    a=$(new_session all-a)
    b=$(new_session all-b --wait)
    keep=$(cubbi-create -r local --image "$BB" --name "$(name keep)" --no-mount -q)
    # b's init ends on TERM: a stopped session
    run cubbi-connect "$b" -- kill -TERM 1  # lint: ok, the exec may die with the session or not
    wait_until 30 is_stopped "$(name all-b)"
    if is_remote; then
        where=()
        # before anything is closed: the service shows this user nothing but
        # this file's sessions (one that showed other people's, the local
        # bystander first, would have --all close them)
        run -0 bash -o pipefail -c 'cubbi-ls --all --json |
            jq -r --arg p "$1-" --arg keep "$2" "select(.name == \$keep or (.name | startswith(\$p) | not)) | .name"' \
            _ "$PREFIX" "$(name keep)"
        [ -z "$output" ]
    else
        where=(-r local)
        mkfifo "$BATS_TEST_TMPDIR/ready"
        "$BATS_TEST_DIRNAME/fixtures/close/scoped-engine" "$BATS_TEST_TMPDIR/engine.sock" \
            "$(name all-)" > "$BATS_TEST_TMPDIR/ready" 3>&- &
        SCOPED=$!
        read -r -t 20 ready < "$BATS_TEST_TMPDIR/ready"
        [ "$ready" = ready ]
        export DOCKER_HOST="unix://$BATS_TEST_TMPDIR/engine.sock"
    fi
    run -2 --separate-stderr cubbi-close "${where[@]}" --all "$a"
    one_line_error 2
    run -0 --separate-stderr cubbi-close "${where[@]}" --all -q
    grep -qx "$a" <<<"$output"
    grep -qx "$b" <<<"$output"
    run -0 cubbi-ls "${where[@]}" -q --all
    [ -z "$output" ]
    unset DOCKER_HOST
    # on the engine itself: those are gone, the one --all could not see is not
    run -0 cubbi-ls -r local -q --all --filter "name=$(name all-)*"
    [ -z "$output" ]
    run -0 cubbi-ls -r local -q --all --filter "name=$(name keep)"
    [ "$output" = "$keep" ]
    run -0 cubbi-close -r local -q "$keep"
}

@test "cubbi-prune --dry-run --json lists exactly what cubbi-prune then closes" {
    a=$(new_session pr-a)
    b=$(new_session pr-b --wait)
    keep=$(new_session keep)
    run cubbi-connect "$b" -- kill -TERM 1  # lint: ok, the exec may die with the session or not
    wait_until 30 is_stopped "$(name pr-b)"
    run -0 --separate-stderr cubbi-prune --older-than 0s --filter "name=$(name pr-)*" --dry-run --json
    dry=$output
    [ "$(jq -r .id <<<"$dry" | sort)" = "$(printf '%s\n' "$a" "$b" | sort)" ]
    run -0 cubbi-ls -q --all --filter "name=$(name pr-)*"
    [ "${#lines[@]}" -eq 2 ]
    run -0 --separate-stderr cubbi-prune --older-than 0s --filter "name=$(name pr-)*" --json
    [ "$output" = "$dry" ]
    run -0 cubbi-ls -q --all --filter "name=$(name pr-)*"
    [ -z "$output" ]
    run -0 cubbi-ls -q --filter "name=$(name keep)"
    [ "$output" = "$keep" ]
    run -2 --separate-stderr cubbi-prune --idle soon
    one_line_error 2
}

# -- local engine only ---------------------------------------------------

@test "local: the engine unreachable exits 4 with one line" {
    skip_if_remote "points DOCKER_HOST at a missing socket"
    for cmd in "cubbi-ls" "cubbi-ls --json" "cubbi-close x" "cubbi-logs x" \
               "cubbi-create --image $BB --no-mount"; do
        run --separate-stderr env DOCKER_HOST=unix:///nonexistent/docker.sock $cmd
        one_line_error 4
        [[ "$stderr" == *DOCKER_HOST* ]]
    done
}

@test "local: a host port already taken fails clearly and leaves no container" {
    skip_if_remote "binds a port on this host and asks docker ps -a"
    # the holder binds a port the kernel picks (no window for anyone else to
    # take it) and prints it once it listens; it lives 5 minutes at most
    mkfifo "$BATS_TEST_TMPDIR/port"
    python3 -c 'import socket, threading
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True); threading.Event().wait(300)' > "$BATS_TEST_TMPDIR/port" 3>&- &
    HOLDER=$!
    read -r -t 20 port < "$BATS_TEST_TMPDIR/port"
    [ "$port" -gt 0 ]
    run --separate-stderr cubbi-create --image "$BB" --name "$(name t)" --no-mount --port "$port:80"
    kill "$HOLDER"
    one_line_error 1
    [[ "$stderr" == *"127.0.0.1:$port"*"already in use"* ]]
    run -0 docker ps -a -q --filter "name=cubbi-$(name t)"
    [ -z "$output" ]
}

@test "local: files made in /app belong to the user who ran cubbi-create" {
    skip_if_remote "--mount is a directory on this host"
    mkdir "$BATS_TEST_TMPDIR/work"
    id=$(cubbi-create --image "$BB" --name "$(name u)" --mount "$BATS_TEST_TMPDIR/work" -q --wait)
    cubbi-connect "$id" -- touch /app/made-inside
    [ "$(stat -c %u:%g "$BATS_TEST_TMPDIR/work/made-inside")" = "$(id -u):$(id -g)" ]
    run -0 docker inspect -f '{{.HostConfig.Privileged}}' "cubbi-$(name u)"
    [ "$output" = false ]
}
