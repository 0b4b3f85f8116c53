# 50-project: clone the session's project into /app (see cubbi-project(1)).
# Sourced by cubbi-init as root; a no-op unless cubbi delivered
# /cubbi/project/project.env (the URL, validated and shell-quoted by cubbi).
# The credential is a 0600 file owned by the session user:
#   /cubbi/project/ssh_key  used with ssh -i, the server's host key scanned
#                           from the project's own host and port, then
#                           StrictHostKeyChecking=yes
#   /cubbi/project/token    answered by a credential helper to git, for the
#                           project's own scheme://host[:port] only
# The clone runs as the session user.  Every expansion is quoted, and the
# values are checked again here against the characters cubbi accepts.
# Never echo the credential: what this prints ends up in cubbi-logs.

_p_dir="$C/project"
if [ -f "$_p_dir/project.env" ]; then
    CUBBI_PROJECT_AUTH=none
    . "$_p_dir/project.env"
    _p_url=$CUBBI_PROJECT_URL
    case "x$_p_url$CUBBI_PROJECT_HOSTPORT$CUBBI_PROJECT_PORT$CUBBI_PROJECT_SCHEME$CUBBI_PROJECT_AUTH" in
        *[!A-Za-z0-9@:/._~+-]*) fail "project URL holds characters cubbi does not accept";;
    esac
    case "$_p_url" in -*|'') fail "invalid project URL";; esac
    command -v git >/dev/null 2>&1 \
        || fail "cannot clone $_p_url: the image has no git (use an image with git installed)"
    if [ -n "$(ls -A /app 2>/dev/null)" ]; then
        fail "cannot clone $_p_url: /app is not empty"
    fi
    chown "$CUBBI_UID:$CUBBI_GID" /app "$_p_dir/ssh_key" "$_p_dir/token" 2>/dev/null
    chmod 0600 "$_p_dir/ssh_key" "$_p_dir/token" 2>/dev/null
    GIT_TERMINAL_PROMPT=0
    GIT_ASKPASS=
    SSH_ASKPASS=
    export GIT_TERMINAL_PROMPT GIT_ASKPASS SSH_ASKPASS
    # name=value settings for git -c at clone time, then kept in /app/.git/config
    set --
    case "$CUBBI_PROJECT_SCHEME" in
    ssh)
        command -v ssh >/dev/null 2>&1 && command -v ssh-keyscan >/dev/null 2>&1 \
            || fail "cannot clone $_p_url: the image has no ssh client (install openssh-client)"
        ssh-keyscan -T 15 -p "$CUBBI_PROJECT_PORT" "$CUBBI_PROJECT_HOST" \
            > "$_p_dir/known_hosts" 2> "$_p_dir/keyscan.log"
        if ! grep -q . "$_p_dir/known_hosts" 2>/dev/null; then
            fail "cannot clone $_p_url: no SSH host key from $CUBBI_PROJECT_HOST port $CUBBI_PROJECT_PORT (unknown host, or no SSH server there)"
        fi
        chmod 0644 "$_p_dir/known_hosts"
        _p_ssh="ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$_p_dir/known_hosts -o ConnectTimeout=20 -o IdentitiesOnly=yes"
        [ -f "$_p_dir/ssh_key" ] && _p_ssh="$_p_ssh -i $_p_dir/ssh_key"
        set -- "core.sshCommand=$_p_ssh"
        ;;
    https|http)
        if [ -f "$_p_dir/token" ]; then
            cat > "$_p_dir/git-credential" <<'HELPER'
#!/bin/sh
# cubbi: git credential helper for the session's project.  Answers "get"
# with /cubbi/project/token, only for the project's own scheme and host.
[ "$1" = get ] || exit 0
. /cubbi/project/project.env
proto= host= user=
while IFS= read -r line && [ -n "$line" ]; do
    case "$line" in
        protocol=*) proto=${line#protocol=};;
        host=*) host=${line#host=};;
        username=*) user=${line#username=};;
    esac
done
[ "$proto" = "$CUBBI_PROJECT_SCHEME" ] && [ "$host" = "$CUBBI_PROJECT_HOSTPORT" ] || exit 0
[ -r /cubbi/project/token ] || exit 0
printf 'username=%s\npassword=%s\n' "${user:-cubbi}" "$(cat /cubbi/project/token)"
HELPER
            chmod 0755 "$_p_dir/git-credential"
            set -- "credential.helper=" \
                "credential.$CUBBI_PROJECT_SCHEME://$CUBBI_PROJECT_HOSTPORT.helper=$_p_dir/git-credential"
        fi
        ;;
    git) ;;
    *) fail "cannot clone $_p_url: unsupported scheme $CUBBI_PROJECT_SCHEME";;
    esac
    for _p_kv in "$@"; do set -- "$@" -c "$_p_kv"; shift; done
    say "cloning $_p_url into /app"
    if ! as_user git "$@" clone --quiet -- "$_p_url" /app 2> "$_p_dir/clone.log"; then
        tr -d '\r' < "$_p_dir/clone.log" | sed 's/^/cubbi-init: git: /' >&2
        _p_why=$(tr -d '\r' < "$_p_dir/clone.log" | grep -v -e '^Cloning into' -e '^Warning: Permanently added' -e '^[[:space:]]*$' | head -n 1 | cut -c 1-300)
        fail "cannot clone $_p_url: ${_p_why:-git clone failed}"
    fi
    # keep the settings for pull and push inside the session
    while [ $# -gt 1 ]; do
        _p_kv=$2; shift 2
        as_user git -C /app config "${_p_kv%%=*}" "${_p_kv#*=}" \
            || fail "cannot configure the clone of $_p_url"
    done
    say "cloned $_p_url into /app"
fi
