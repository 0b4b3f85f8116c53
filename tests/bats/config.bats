#!/usr/bin/env bats
# cubbi-config as a user types it.  Each test has its own config directory
# (CUBBI_CONFIG_DIR) and keeps secrets in the 0600 file (CUBBI_SECRETS=file).

load helper

setup_file() { common_setup_file; }
teardown_file() { common_teardown_file; }

setup() {
    export CUBBI_CONFIG_DIR="$BATS_TEST_TMPDIR/cfg"
    export CUBBI_SECRETS=file
}

@test "set, get and list: plain values, typed" {
    run -0 cubbi-config set defaults.image aider
    run -0 cubbi-config get defaults.image
    [ "$output" = "aider" ]
    run -0 cubbi-config set defaults.connect no
    run -0 cubbi-config get defaults.connect
    [ "$output" = "false" ]
    run -0 bash -c 'cubbi-config list --json | jq -r "select(.key==\"defaults.connect\") | [.value, .stored] | @tsv"'
    [ "$output" = $'false\tconfig' ]
    run -0 bash -c 'cubbi-config list --json | jq -s length'
    [ "$output" -ge 8 ]
    [ "$(stat -c %a "$CUBBI_CONFIG_DIR/config.yaml")" = 600 ]
}

@test "the spec's shorthand: openai.api_key is services.openai.api_key" {
    run -0 cubbi-config set openai.api_key sk-short
    run -0 cubbi-config get services.openai.api_key --reveal
    [ "$output" = "sk-short" ]
    run -0 cubbi config get openai.api_key
    [ "$output" = "********" ]
}

@test "a secret from stdin stays out of the config file and is masked" {
    run --separate-stderr bash -c 'printf "sk-bats-secret\n" | cubbi-config set anthropic.api_key -'
    [ "$status" -eq 0 ]
    [[ "$stderr" == *"stored in $CUBBI_CONFIG_DIR/secrets.yaml"* ]]
    run -1 grep -q sk-bats-secret "$CUBBI_CONFIG_DIR/config.yaml"
    run -0 grep -q 'secret:services.anthropic.api_key' "$CUBBI_CONFIG_DIR/config.yaml"
    [ "$(stat -c %a "$CUBBI_CONFIG_DIR/secrets.yaml")" = 600 ]
    run -0 cubbi-config list
    [[ "$output" != *sk-bats-secret* ]]
    [[ "$output" == *"services.anthropic.api_key"*"********"*"file"* ]]
    run -0 bash -c 'cubbi-config get anthropic.api_key --json | jq -r "[.value, .secret, .stored] | @tsv"'
    [ "$output" = $'********\ttrue\tfile' ]
    run -0 cubbi-config get anthropic.api_key --reveal
    [ "$output" = "sk-bats-secret" ]
}

@test "an \${ENV_VAR} reference is stored as written and resolved at use" {
    run -0 cubbi-config set openrouter.api_key '${MY_OR_KEY}'
    run -0 cubbi-config get openrouter.api_key
    [ "$output" = '${MY_OR_KEY}' ]
    MY_OR_KEY=sk-or-env run -0 cubbi-config get openrouter.api_key --reveal
    [ "$output" = "sk-or-env" ]
    run --separate-stderr cubbi-config get openrouter.api_key --reveal
    one_line_error 1
    [[ "$stderr" == *MY_OR_KEY*"not set"* ]]
}

@test "unknown keys and wrong types: one line, exit 2, file untouched" {
    run -0 cubbi-config set defaults.image aider
    cp "$CUBBI_CONFIG_DIR/config.yaml" "$BATS_TEST_TMPDIR/before"
    run --separate-stderr cubbi-config set defaults.connect maybe
    one_line_error 2
    run --separate-stderr cubbi-config set defaults.conect true
    one_line_error 2
    [[ "$stderr" == *"did you mean defaults.connect?"* ]]
    run --separate-stderr cubbi-config set images.ca_cert /no/such.pem
    one_line_error 2
    cmp "$CUBBI_CONFIG_DIR/config.yaml" "$BATS_TEST_TMPDIR/before"
}

@test "malformed YAML: file:line:column, exit 1, never overwritten" {
    mkdir -p "$CUBBI_CONFIG_DIR"
    printf 'defaults:\n  image: "unterminated\n' > "$CUBBI_CONFIG_DIR/config.yaml"
    chmod 600 "$CUBBI_CONFIG_DIR/config.yaml"
    cp "$CUBBI_CONFIG_DIR/config.yaml" "$BATS_TEST_TMPDIR/before"
    run --separate-stderr cubbi-config set defaults.image goose
    one_line_error 1
    [[ "$stderr" =~ config\.yaml:[0-9]+:[0-9]+:\ invalid\ YAML ]]
    cmp "$CUBBI_CONFIG_DIR/config.yaml" "$BATS_TEST_TMPDIR/before"
}

@test "network add, list, remove; names Docker would refuse are refused" {
    run -0 cubbi-config network add teamnet
    run -0 cubbi-config network add other.net
    run -0 cubbi-config network list
    [ "$output" = $'teamnet\nother.net' ]
    run -0 bash -c 'cubbi-config network list --json | jq -r .name'
    [ "${lines[1]}" = "other.net" ]
    run -0 cubbi-config network remove teamnet
    run -0 cubbi-config network list
    [ "$output" = "other.net" ]
    run --separate-stderr cubbi-config network add 'no/slash'
    one_line_error 2
    run --separate-stderr cubbi-config network remove teamnet
    one_line_error 3
}

@test "unset brings the default back; reset asks for --yes off a terminal" {
    run -0 cubbi-config set defaults.image aider
    run -0 cubbi-config unset defaults.image
    run -0 cubbi-config get defaults.image
    [ "$output" = "goose" ]
    run -0 cubbi-config set openai.api_key sk-gone
    run --separate-stderr cubbi-config reset </dev/null
    one_line_error 2
    run -0 cubbi-config reset --yes
    run -1 grep -q sk-gone "$CUBBI_CONFIG_DIR/secrets.yaml"
    run -3 cubbi-config get openai.api_key
}

@test "unset of a section asks for --yes and takes its secrets and remote tokens" {
    run -0 cubbi-config set openai.api_key sk-bats-section
    run -0 cubbi-remote add bats-rv http://127.0.0.1:9 --token tok-bats-rv
    run --separate-stderr cubbi-config unset services </dev/null
    one_line_error 2
    [[ "$stderr" == *"--yes"* ]]
    run --separate-stderr cubbi-config unset remote </dev/null
    one_line_error 2
    run -0 grep -q sk-bats-section "$CUBBI_CONFIG_DIR/secrets.yaml"
    run -0 grep -q tok-bats-rv "$CUBBI_CONFIG_DIR/secrets.yaml"
    run -0 cubbi-config unset services --yes
    run -0 cubbi-config unset remote --yes
    run -1 grep -q sk-bats-section "$CUBBI_CONFIG_DIR/secrets.yaml"
    run -1 grep -q tok-bats-rv "$CUBBI_CONFIG_DIR/secrets.yaml"
}

@test "secret:... in a plain key is a string; unsetting it keeps the secret it names" {
    run -0 cubbi-config set openai.api_key sk-bats-keep
    run -0 cubbi-config set defaults.image secret:services.openai.api_key
    run -0 cubbi-config get defaults.image
    [ "$output" = "secret:services.openai.api_key" ]
    run -0 cubbi-config unset defaults.image
    run -0 cubbi-config get openai.api_key --reveal
    [ "$output" = "sk-bats-keep" ]
}

@test "path tells where the config and the secrets are" {
    run -0 cubbi-config path
    [ "$output" = "$CUBBI_CONFIG_DIR/config.yaml" ]
    run -0 bash -c 'cubbi-config path --json | jq -r .secrets_kind'
    [ "$output" = "file" ]
}

@test "a configured key reaches the session's login shell" {
    run -0 bash -c 'printf "sk-bats-session\n" | cubbi-config set openai.api_key - 2>/dev/null'
    id=$(new_session key --wait -e ANTHROPIC_API_KEY=from-cli)
    run -0 cubbi-connect "$id" -- sh -lc 'echo "$OPENAI_API_KEY $ANTHROPIC_API_KEY"'
    [ "$output" = "sk-bats-session from-cli" ]
    run -0 cubbi-ls --json --filter "name=$(name key)"
    [[ "$output" != *sk-bats-session* ]]
}
