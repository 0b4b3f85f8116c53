#!/usr/bin/env bats
# Image definitions as a user types them: list/show (local and remote),
# validate and build (local), and sessions from a user's own definition.

load helper

FIX="$BATS_TEST_DIRNAME/fixtures/image"

setup_file() {
    common_setup_file
    # builds in this file start FROM the suite's busybox image: no registry
    printf 'images:\n  base: %s\n' "$BB" > "$CUBBI_CONFIG_DIR/config.yaml"
}
teardown_file() { common_teardown_file; }

@test "list shows the built-in images, in three formats" {
    run -0 cubbi-image list -q
    for n in base aider claude-code goose; do
        grep -qx "$n" <<<"$output"
    done
    run -0 bash -c 'cubbi-image list --json | jq -r "select(.name==\"aider\") | .tag"'
    [ "$output" = "cubbi/aider:latest" ]
    run -0 cubbi-image list
    [[ "${lines[0]}" == NAME*SOURCE* ]]
}

@test "show gives the definition: command, environment, persistent configs" {
    run -0 bash -c 'cubbi-image show claude-code --json | jq -r ".init.command, (.persistent_configs[0].source)"'
    [ "${lines[0]}" = "claude" ]
    [ "${lines[1]}" = "~/.claude" ]
    run --separate-stderr cubbi-image show no-such-image
    one_line_error 3
}

@test "validate names the bad field and exits 2" {
    skip_if_remote "validates a local folder"
    run -0 cubbi-image validate -q "$FIX/bats-tiny"
    [ "$output" = "bats-tiny" ]
    run --separate-stderr cubbi-image validate "$FIX/bats-broken"
    one_line_error 2
    [[ "$stderr" == *"environment[0].required"* ]]
}

@test "a user's own folder: built on first use, required variable, defaults, command" {
    skip_if_remote "the folder is on this machine"
    # the required variable missing: the session fails, and cubbi-ls says why
    run --separate-stderr cubbi-create --image "$FIX/bats-tiny" --name "$(name nokey)" \
        --no-mount --wait -q
    [ "$status" -eq 1 ]
    [[ "$stderr" == *"TINY_KEY"* ]]
    run -0 state_of "$(name nokey)"
    [[ "$output" == failed$'\t'"required variable TINY_KEY is not set"* ]]

    id=$(cubbi-create --image "$FIX/bats-tiny" --name "$(name ok)" --no-mount --wait -q \
         -e TINY_KEY=k)
    run -0 cubbi-connect "$id" -- sh -c 'echo "$TINY_KEY $TINY_MODE"; cat /etc/tiny-tool'
    [ "${lines[0]}" = "k quiet" ]
    [ "${lines[1]}" = "tiny-tool" ]
    # with no command, connect starts the image's init.command
    run -0 cubbi-connect "$id" </dev/null
    [ "$output" = "tiny-tool" ]
}

@test "tool state follows the project folder across sessions" {
    skip_if_remote "mounts a folder of this machine"
    export CUBBI_HOME="$BATS_FILE_TMPDIR/cubbi-home"
    mkdir -p "$BATS_TEST_TMPDIR/a" "$BATS_TEST_TMPDIR/b"
    a1=$(cubbi-create --image "$FIX/bats-tiny" --name "$(name a1)" -m "$BATS_TEST_TMPDIR/a" \
         --wait -q -e TINY_KEY=k)
    run -0 cubbi-connect "$a1" -- sh -c 'echo remembered > ~/.tiny/note'
    run -0 cubbi-close "$a1"
    a2=$(cubbi-create --image "$FIX/bats-tiny" --name "$(name a2)" -m "$BATS_TEST_TMPDIR/a" \
         --wait -q -e TINY_KEY=k)
    run -0 cubbi-connect "$a2" -- sh -c 'cat ~/.tiny/note'
    [ "$output" = "remembered" ]
    b1=$(cubbi-create --image "$FIX/bats-tiny" --name "$(name b1)" -m "$BATS_TEST_TMPDIR/b" \
         --wait -q -e TINY_KEY=k)
    run -1 cubbi-connect "$b1" -- sh -c 'cat ~/.tiny/note'
}
