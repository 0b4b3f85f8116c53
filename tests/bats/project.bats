#!/usr/bin/env bats
# Projects as a user types them: cubbi-project add/list/show/remove, and
# `cubbi URL` cloning a private repository from real git servers (an sshd
# with key auth and git's smart HTTP behind a token, containers on
# cubbi-network made by tests/fixtures/gitservers/gitservers.py).  Sessions
# name that network with --network: through a server, a session joins only
# its user's own network and those the policy allows (tests/serverproc.py's).
# Through a swarm-mode server (tests/swarmharness.py serve) the servers sit
# on the swarm's network instead, named by address, and cubbi-network is an
# overlay across the nodes.

load helper

GITSERVERS="$BATS_TEST_DIRNAME/../fixtures/gitservers/gitservers.py"

setup_file() {
    common_setup_file
    export CUBBI_HOME="$BATS_FILE_TMPDIR/cubbi-home"   # project tool state, not in ~
    # test-machine setup, as ensure_test_image: the git servers and the
    # session image with git (built once, reused by tag)
    GS_DIR="$BATS_FILE_TMPDIR/gitservers"
    python3 "$GITSERVERS" up "$PREFIX" "$GS_DIR" > "$BATS_FILE_TMPDIR/gs.json"
    export GS_DIR
}

teardown_file() {
    common_teardown_file
    python3 "$GITSERVERS" down "$PREFIX" || true
}

gs() { jq -r ".$1" "$BATS_FILE_TMPDIR/gs.json"; }

setup() {
    # each test starts with no project (local config, or the service's)
    cubbi-project list -q | cubbi-project remove -q >/dev/null
}

@test "add reads the token from stdin; list and show name its kind, never its value" {
    run --separate-stderr bash -c 'echo CANARY-tok-77 | cubbi-project add https://git.example.com/team/app.git --token -'
    [ "$status" -eq 0 ]
    [[ "$stderr" == *"added project git.example.com/team/app (token)"* ]]
    run -0 cubbi-project list -q
    [ "$output" = "git.example.com/team/app" ]
    run -0 bash -c 'cubbi-project show git@git.example.com:team/app.git --json | jq -r "[.id, .auth, .credential] | @tsv"'
    [ "$output" = $'git.example.com/team/app\ttoken\tan access token' ]
    run -0 bash -c 'cubbi-project list; cubbi-project list --json; cubbi-project show git.example.com/team/app 2>&1'
    [[ "$output" != *CANARY-tok-77* ]]
}

@test "every form of a URL names the same project" {
    run -0 cubbi-project add github.com/hello/private
    for form in git@github.com:hello/private.git https://github.com/hello/private \
                ssh://git@github.com/hello/private.git github.com/hello/private.git; do
        run -0 bash -c 'cubbi-project show "$1" --json | jq -r .id' _ "$form"
        [ "$output" = "github.com/hello/private" ]
    done
}

@test "list -q | remove removes every project; an unknown one exits 3" {
    TOK=t1 run -0 cubbi-project add a.example/x/y --token-env TOK
    run -0 cubbi-project add b.example/x/y
    run --separate-stderr bash -c 'cubbi-project list -q | cubbi-project remove'
    [ "$status" -eq 0 ]
    [[ "$stderr" == *"removed project a.example/x/y"* && "$stderr" == *"removed project b.example/x/y"* ]]
    run -0 cubbi-project list -q
    [ -z "$output" ]
    run --separate-stderr cubbi-project remove a.example/x/y
    one_line_error 3
}

@test "bad input: one line on stderr and the documented exit code" {
    run --separate-stderr cubbi-project add 'ssh://host/x;touch /tmp/pwned'
    one_line_error 2
    run --separate-stderr cubbi-project add 'https://me:pw-secret@h.example/x'
    one_line_error 2
    [[ "$stderr" != *pw-secret* ]]
    run --separate-stderr cubbi-project add h.example/x --token t --ssh-key /etc/hostname
    one_line_error 2
    run --separate-stderr cubbi-project add h.example/x --ssh-key /no/such/key
    one_line_error 3
    run --separate-stderr cubbi-project show
    one_line_error 2
    run -0 cubbi-project list -q
    [ -z "$output" ]
}

@test "cubbi URL clones a private repository over http with the stored token" {
    run -0 bash -c 'cubbi-project add "$1" --token - < "$GS_DIR/token"' _ "$(gs http_url)"
    run --separate-stderr cubbi "$(gs http_url)" --image "$(gs client_image)" --name "$(name h)" \
        --network cubbi-network --no-connect --wait -q
    [ "$status" -eq 0 ]
    id=$output
    run -0 cubbi-connect "$id" -- cat /app/README
    [ "$output" = "hello from the project" ]
    run -0 bash -c 'cubbi-ls --json --filter "name=$1" | jq -r "[.status, .project] | @tsv"' _ "$(name h)"
    [ "$output" = "running"$'\t'"$(gs http_url)" ]
}

@test "over ssh with the key: the clone is /app and the project's init.sh ran" {
    run -0 cubbi-project add "$(gs ssh_url)" --ssh-key "$(gs key)"
    run --separate-stderr cubbi-create --project "$(gs ssh_url)" --image "$(gs client_image)" \
        --name "$(name s)" --network cubbi-network --no-connect --wait -q
    [ "$status" -eq 0 ]
    run -0 cubbi-connect "$output" -- sh -c 'cat /app/.cubbi-init-ran; git -C /app log --format=%s'
    [ "${lines[0]}" = "project-init-ran" ]
    [ "${lines[1]}" = "init" ]
}

@test "a wrong key fails the session; ls and logs say why, without the key" {
    ssh-keygen -q -t ed25519 -N '' -f "$BATS_TEST_TMPDIR/wrong"
    run -0 cubbi-project add "$(gs ssh_url)" --ssh-key "$BATS_TEST_TMPDIR/wrong"
    run --separate-stderr cubbi-create --project "$(gs ssh_url)" --image "$(gs client_image)" \
        --name "$(name w)" --network cubbi-network --no-connect --wait -q
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"Permission denied (publickey)"* ]]
    run -0 state_of "$(name w)"
    [[ "$output" == "failed"$'\t'"cannot clone $(gs ssh_url): "*"Permission denied (publickey)"* ]]
    body=$(sed -n 2p "$BATS_TEST_TMPDIR/wrong")
    run -0 bash -c 'cubbi-logs "$1" 2>&1' _ "$(name w)"
    [[ "$output" == *"Permission denied (publickey)"* ]]
    [[ "$output" != *"$body"* ]]
}

@test "a URL with shell metacharacters runs nothing" {
    run --separate-stderr cubbi "https://h.example/\$(touch $BATS_TEST_TMPDIR/pwned)" \
        --image "$(gs client_image)" --name "$(name m)" --no-connect
    one_line_error 2
    run --separate-stderr cubbi-create --project "ssh://h.example/x;touch $BATS_TEST_TMPDIR/pwned" \
        --image "$(gs client_image)" --name "$(name m)" --no-connect
    one_line_error 2
    [ ! -e "$BATS_TEST_TMPDIR/pwned" ]
    run -0 cubbi-ls -q --all --filter "name=$(name m)"
    [ -z "$output" ]
}
