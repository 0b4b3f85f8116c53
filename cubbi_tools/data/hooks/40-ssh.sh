# 40-ssh: the session's SSH endpoint for cubbi-ssh(1).  Sourced by cubbi-init
# as root; a no-op in an image without sshd (cubbi-ssh then says so).
# Nothing listens: cubbi-ssh runs `sshd -i` as the session user over the exec
# stream (or the service's WebSocket), so sshd here only ever logs in that
# user.  The host key is made for this session (cubbi-ssh-config records its
# public half on the client, StrictHostKeyChecking stays on); the keys
# allowed are those the session's owner gave at create
# ($C/ssh/authorized_keys, root's, read-only); no password or keyboard login.

_s_sshd=""
for _s in /usr/sbin/sshd /usr/local/sbin/sshd /usr/bin/sshd; do
    if [ -x "$_s" ]; then _s_sshd=$_s; break; fi
done
if [ -n "$_s_sshd" ] && command -v ssh-keygen >/dev/null 2>&1; then
    _s_dir="$C/ssh"
    mkdir -p "$_s_dir" && chmod 0755 "$_s_dir" || fail "cannot create $_s_dir"
    if [ ! -f "$_s_dir/host_ed25519_key" ]; then
        ssh-keygen -q -t ed25519 -N "" -C "cubbi-session-$CUBBI_SESSION_ID" \
            -f "$_s_dir/host_ed25519_key" >/dev/null 2>&1 \
            || fail "cannot make the session's SSH host key (ssh-keygen failed)"
    fi
    # sshd runs as the session user: it must read its host key
    chown "$CUBBI_UID:$CUBBI_GID" "$_s_dir/host_ed25519_key"
    chmod 0600 "$_s_dir/host_ed25519_key"
    touch "$_s_dir/authorized_keys"
    chown 0:0 "$_s_dir/authorized_keys"
    chmod 0644 "$_s_dir/authorized_keys"
    _s_sftp=internal-sftp
    for _s in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/ssh/sftp-server; do
        if [ -x "$_s" ]; then _s_sftp=$_s; break; fi
    done
    if [ "$CUBBI_UID" = 0 ]; then
        mkdir -p /run/sshd && chmod 0755 /run/sshd   # root's sshd wants its privsep dir
        _s_root="PermitRootLogin prohibit-password"
    else
        _s_root="PermitRootLogin no"
    fi
    cat > "$_s_dir/sshd_config" <<SSHD
# made by cubbi-init (40-ssh): sshd -i as the session user, see cubbi-ssh(1)
HostKey $_s_dir/host_ed25519_key
AuthorizedKeysFile $_s_dir/authorized_keys
AllowUsers $user_name
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
PermitEmptyPasswords no
$_s_root
UsePAM no
PrintMotd no
PidFile none
AcceptEnv LANG LC_* COLORTERM
Subsystem sftp $_s_sftp
SSHD
    chmod 0644 "$_s_dir/sshd_config"
    printf '%s\n' "$_s_sshd" > "$_s_dir/sshd"
    printf '%s\n' "$user_name" > "$_s_dir/user"
fi
