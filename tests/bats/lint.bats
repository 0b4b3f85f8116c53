#!/usr/bin/env bats
# tests/bats-lint, the check that every bats assertion can fail (tests/run
# runs it before the suite): it reports each pattern it knows, as
# FILE:LINE: [RULE], and nothing that only looks like one.  No engine used.

load helper

LINT="$BATS_TEST_DIRNAME/../bats-lint"
FIX="$BATS_TEST_DIRNAME/fixtures/lint"

# expected FILE: "FILE:LINE: [RULE]" for each line marked "# expect: RULE"
expected() {
    grep -n '# expect: ' "$1" | sed -E "s|^([0-9]+):.*# expect: ([a-z]+).*|$1:\1: [\2]|"
}

@test "bats-lint reports each pattern, as FILE:LINE: [RULE], and exits 1" {
    cd "$FIX"
    run -1 --separate-stderr "$LINT" bad.bats
    [ "$(cut -d' ' -f1-2 <<<"$output")" = "$(expected bad.bats)" ]
    [ "${#lines[@]}" -eq 24 ]
    for rule in bang and fallback run local sleep if; do
        grep -q "^bad.bats:[0-9]*: \[$rule\] " <<<"$output"
    done
    # in setup and a helper function too, not only in @test bodies
    grep -q "^bad.bats:[0-9]*: \[bang\] .* in setup()" <<<"$output"
    grep -q "^bad.bats:[0-9]*: \[and\] .* in make_it()" <<<"$output"
    [ "$stderr" = "bats-lint: 24 finding(s)" ]
}

@test "bats-lint reads the helper.bash beside a .bats file, minding how its functions are called" {
    cd "$FIX/helper"
    run -1 --separate-stderr "$LINT" uses.bats
    [ "$(cut -d' ' -f1-2 <<<"$output")" = "$(expected helper.bash)" ]
    [ "$stderr" = "bats-lint: 2 finding(s)" ]
}

@test "bats-lint reports nothing that only looks like those patterns" {
    cd "$FIX"
    run -0 --separate-stderr "$LINT" good.bats
    [ -z "$output" ]
    [ -z "$stderr" ]
}

@test "the suite's own .bats files pass bats-lint" {
    run -0 "$LINT"
    [ -z "$output" ]
}

@test "bats-lint: a file it cannot read is a usage error" {
    run -2 --separate-stderr "$LINT" "$FIX/no-such.bats"
    error_lines 2 1
}
