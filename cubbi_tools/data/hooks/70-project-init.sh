# 70-project-init: run the project's own /app/.cubbi/init.sh, if it has one,
# as the session user in /app with the session's environment (after the
# clone, 50-59, and the persistent configs, 60-69).  An executable script
# runs as it is (its #! line chooses the interpreter); otherwise with bash
# when its first line names bash and the image has it, else with sh.
# A non-zero exit marks the session failed; its output is in cubbi-logs.

if [ -f /app/.cubbi/init.sh ]; then
    say "running /app/.cubbi/init.sh as $user_name"
    if [ -x /app/.cubbi/init.sh ]; then
        as_user /app/.cubbi/init.sh
    elif head -n 1 /app/.cubbi/init.sh | grep -q bash && [ -x /bin/bash ]; then
        as_user /bin/bash /app/.cubbi/init.sh
    else
        as_user /bin/sh /app/.cubbi/init.sh
    fi
    _pi_rc=$?
    [ "$_pi_rc" = 0 ] || fail "the project's .cubbi/init.sh exited with status $_pi_rc"
fi
