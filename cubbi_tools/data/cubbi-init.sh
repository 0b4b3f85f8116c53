#!/bin/sh
# cubbi-init: prepares a session container, then keeps it alive.
# POSIX sh only: it runs in any image that has /bin/sh (busybox included).
# Marker lines on stderr ("cubbi-init: ready" / "cubbi-init: failed: WHY")
# and the files /cubbi/ready or /cubbi/failed tell cubbi the session's state.
# Secrets arrive in /cubbi/env (mode 0600, owned by the session user) and
# are never echoed here.

C=/cubbi
say() { echo "cubbi-init: $*" >&2; }

keep_alive() {
    trap 'exit 0' TERM INT HUP
    while :; do sleep 3600 & wait $!; done
}

fail() {
    printf '%s\n' "$*" > "$C/failed"
    echo "cubbi-init: failed: $*" >&2
    keep_alive
}

# The uid/gid come from the container's own config (its Env), never from
# /cubbi/env: that file holds the session's variables, which a remote client
# chose, and is only ever sourced by the session user (as_user, login shells).
CUBBI_UID=${CUBBI_UID:-0}
CUBBI_GID=${CUBBI_GID:-0}

# -- the session user, with the host user's uid/gid ------------------------
group_name=""
while IFS=: read -r g_name g_pw g_gid g_rest; do
    if [ "$g_gid" = "$CUBBI_GID" ]; then group_name=$g_name; break; fi
done < /etc/group 2>/dev/null
if [ -z "$group_name" ]; then
    group_name=cubbi
    echo "cubbi:x:$CUBBI_GID:" >> /etc/group || fail "cannot add group $CUBBI_GID to /etc/group"
fi
user_name=""
user_home=""
while IFS=: read -r u_name u_pw u_uid u_gid u_gecos u_home u_shell; do
    if [ "$u_uid" = "$CUBBI_UID" ]; then user_name=$u_name; user_home=$u_home; break; fi
done < /etc/passwd 2>/dev/null
user_shell=/bin/sh
[ -x /bin/bash ] && user_shell=/bin/bash
if [ -z "$user_name" ]; then
    user_name=cubbi
    user_home=/home/cubbi
    echo "cubbi:x:$CUBBI_UID:$CUBBI_GID:cubbi session user:$user_home:$user_shell" >> /etc/passwd \
        || fail "cannot add user $CUBBI_UID to /etc/passwd"
    if [ -f /etc/shadow ]; then echo "cubbi:!:19000:0:99999:7:::" >> /etc/shadow; fi
fi
[ -n "$user_home" ] || user_home=/home/$user_name
# an image imported from a 0700 directory has a / that only root may cross;
# storage drivers without overlay (vfs, btrfs, zfs) keep it so
if [ "$CUBBI_UID" != 0 ]; then
    case $(ls -ld / 2>/dev/null) in
        d????????[xt]*) ;;
        *) chmod go+rx / 2>/dev/null && say "made / searchable for the session user (the image had it closed)" ;;
    esac
fi
mkdir -p "$user_home" /app || fail "cannot create $user_home or /app"
chown "$CUBBI_UID:$CUBBI_GID" "$user_home" 2>/dev/null
# /app belongs to the session user unless it is a host mount (left as it is)
if [ -z "$(ls -A /app 2>/dev/null)" ]; then chown "$CUBBI_UID:$CUBBI_GID" /app 2>/dev/null; fi
if [ "${CUBBI_SUDO:-1}" = 1 ] && [ "$CUBBI_UID" != 0 ] && [ -d /etc/sudoers.d ] && command -v sudo >/dev/null 2>&1; then
    echo "$user_name ALL=(ALL) NOPASSWD:ALL" > /etc/sudoers.d/cubbi && chmod 0440 /etc/sudoers.d/cubbi
fi

# -- the environment, for login shells and the tool -------------------------
chown "$CUBBI_UID:$CUBBI_GID" "$C/env" 2>/dev/null
chmod 0600 "$C/env" 2>/dev/null
cat > "$C/profile.sh" <<PROFILE
# cubbi session environment (sourced by login shells)
# (the session user's file: another account, root included, does not source it)
[ -r $C/env ] && [ -O $C/env ] && . $C/env
export HOME="$user_home" USER="$user_name" CUBBI_SESSION_ID="$CUBBI_SESSION_ID"
PROFILE
if [ -d /etc/profile.d ]; then
    cp "$C/profile.sh" /etc/profile.d/zz-cubbi.sh
elif ! grep -q "$C/profile.sh" /etc/profile 2>/dev/null; then
    echo ". $C/profile.sh" >> /etc/profile
fi
# an interactive cubbi-connect starts the image's init.command (/cubbi/command)
# in a login shell, else a login shell
cat > "$C/login" <<LOGIN
#!/bin/sh
cd /app 2>/dev/null || cd
[ -s $C/command ] && exec $user_shell -l $C/command
exec $user_shell -l
LOGIN
chmod 0755 "$C/login"

# as_user CMD...: run CMD as the session user, with its environment loaded.
# The environment is sourced after the drop to the session user, never in
# this root shell: its PATH, LD_PRELOAD or CUBBI_UID would steer root.
setpriv=""
if [ "$CUBBI_UID" != 0 ] && setpriv --help 2>&1 | grep -q reuid; then
    setpriv=$(command -v setpriv)
fi
_as_user_sh='[ -r /cubbi/env ] && . /cubbi/env; HOME=$1 USER=$2; export HOME USER; shift 2; exec "$@"'
as_user() {
    if [ "$CUBBI_UID" = 0 ]; then
        (cd /app 2>/dev/null; HOME="$user_home"; export HOME; [ -r $C/env ] && . $C/env; "$@")
    elif [ -n "$setpriv" ]; then
        (cd /app 2>/dev/null; "$setpriv" --reuid="$CUBBI_UID" --regid="$CUBBI_GID" \
            --clear-groups /bin/sh -c "$_as_user_sh" sh "$user_home" "$user_name" "$@")
    else
        _q=""
        for _a in "$@"; do _q="$_q '$(printf '%s' "$_a" | sed "s/'/'\\\\''/g")'"; done
        (cd /app 2>/dev/null; su -s /bin/sh "$user_name" -c ". $C/env 2>/dev/null; export HOME='$user_home'; $_q")
    fi
}

# -- image and project hooks (sourced in name order, as root) ---------------
# 20-29 image checks, 50-59 project clone, 60-69 persistent configs,
# 70-79 the project's own .cubbi/init.sh
for hook in "$C"/hooks/*.sh; do
    [ -f "$hook" ] || continue
    . "$hook" || fail "setup step $(basename "$hook") failed"
done

: > "$C/ready"
say ready

# -- idle: how long the session has been unused ------------------------------
# Every tick (a fifth of CUBBI_IDLE_TIMEOUT, 1 to 30 s; 30 s without one) the
# session counts as used when a process the engine exec'd runs (cubbi-connect,
# cubbi-connect -- CMD, a server's terminal or exec, ssh through cubbi-ssh: its
# parent is outside the container, pid 0; the health check is not one), when
# its processes used more than a tenth of a CPU since the last tick, or when a
# log follow touched /cubbi/active (cubbi-logs -f, a server's log stream; a
# plain `docker logs -f` cannot be seen from in here).  /cubbi/idle holds the
# seconds unused so far (cubbi-prune --idle reads it).  Past
# CUBBI_IDLE_TIMEOUT the init ends and the engine removes the container
# (created with AutoRemove): the session is closed; its tool state, on the
# host, stays.
cpu_us() {
    if { read -r n < /sys/fs/cgroup/cpuacct/cpuacct.usage; } 2>/dev/null; then
        echo $((n / 1000)); return
    fi
    if [ -r /sys/fs/cgroup/cpu.stat ]; then
        while read -r k v; do [ "$k" = usage_usec ] && { echo "$v"; return; }; done < /sys/fs/cgroup/cpu.stat
    fi
    t=0  # no cgroup file: the live processes' user and system time, in ticks of 10 ms
    for d in /proc/[0-9]*; do
        { read -r s < "$d/stat"; } 2>/dev/null || continue
        set -- ${s##*) }
        t=$((t + ${12} + ${13}))
    done
    echo $((t * 10000))
}
attached() {
    for d in /proc/[0-9]*; do
        [ "$d" = /proc/1 ] && continue
        { read -r s < "$d/stat"; } 2>/dev/null || continue
        set -- ${s##*) }
        [ "$2" = 0 ] && [ "$1" != Z ] || continue
        case $(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) in *"$C/ready"*) continue ;; esac
        return 0
    done
    return 1
}
watch_idle() {
    trap 'exit 0' TERM INT HUP
    limit=${CUBBI_IDLE_TIMEOUT:-0}
    case $limit in ''|*[!0-9]*) limit=0 ;; esac
    tick=30
    [ "$limit" -gt 0 ] && tick=$((limit / 5))
    [ "$tick" -lt 1 ] && tick=1
    [ "$tick" -gt 30 ] && tick=30
    idle=0
    last=$(cpu_us)
    echo 0 > "$C/idle"
    while :; do
        sleep "$tick" & wait $!
        now=$(cpu_us)
        if [ -e "$C/active" ] || attached || [ $((now - last)) -gt $((tick * 100000)) ]; then
            rm -f "$C/active"
            idle=0
        else
            idle=$((idle + tick))
        fi
        last=$(cpu_us)  # after this tick's own reading of /proc
        echo "$idle" > "$C/idle"
        if [ "$limit" -gt 0 ] && [ "$idle" -ge "$limit" ]; then
            say "idle: unused for ${idle}s (idle timeout ${limit}s); closing the session"
            exit 0
        fi
    done
}

watch_idle
