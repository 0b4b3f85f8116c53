
# _pc_mkdirs DIR: create DIR and its missing parents; those under the
# user's home, /app or /cubbi-config belong to the session user
_pc_mkdirs() {
    [ -d "$1" ] && return 0
    _pc_mkdirs "$(dirname "$1")" || return 1
    mkdir "$1" || return 1
    case "$1" in
        "$user_home"/*|/app/*|/cubbi-config/*) chown "$CUBBI_UID:$CUBBI_GID" "$1";;
    esac
}
# _pc_link TYPE SOURCE TARGET: SOURCE becomes a symlink to TARGET (kept in
# /cubbi-config); the first time, TARGET is seeded with what the image has
_pc_link() {
    _pc_s=$2
    case "$_pc_s" in "~/"*) _pc_s="$user_home/${_pc_s#\~/}";; esac
    # never replace /, the project, cubbi's own folders, a home, or any
    # mount point (a host folder): rm -rf there would delete the user's files
    case "$_pc_s" in
        /|/app|/cubbi|/cubbi/*|/cubbi-config|/cubbi-config/*|"$user_home"|*/.|*/./*|*/..|*/../*)
            say "refused to link $_pc_s: cubbi does not replace that path"; return 1;;
    esac
    case /app/ in "$_pc_s"/*) say "refused to link $_pc_s: it holds /app"; return 1;; esac
    if [ -e "$_pc_s" ] && cut -d' ' -f5 /proc/self/mountinfo 2>/dev/null | grep -qxF "$_pc_s"; then
        say "refused to link $_pc_s: it is a mount point"; return 1
    fi
    _pc_mkdirs "$(dirname "$3")" || return 1
    if [ "$1" = directory ]; then
        if [ ! -d "$3" ]; then
            _pc_mkdirs "$3" || return 1
            if [ -d "$_pc_s" ] && [ ! -L "$_pc_s" ]; then
                cp -a "$_pc_s/." "$3/" && chown -R "$CUBBI_UID:$CUBBI_GID" "$3"
            fi
        fi
    elif [ ! -e "$3" ] && [ -f "$_pc_s" ] && [ ! -L "$_pc_s" ]; then
        cp -a "$_pc_s" "$3" && chown "$CUBBI_UID:$CUBBI_GID" "$3"
    fi
    if [ -L "$_pc_s" ]; then
        rm -f "$_pc_s"
    elif [ -e "$_pc_s" ]; then
        case "$_pc_s" in
            /app/*) say "kept $_pc_s: it exists in the project, so it is not linked to $3"
                    return 0;;
        esac
        rm -rf "$_pc_s" || return 1
    fi
    _pc_mkdirs "$(dirname "$_pc_s")" || return 1
    ln -s "$3" "$_pc_s" || return 1
    chown -h "$CUBBI_UID:$CUBBI_GID" "$_pc_s" 2>/dev/null
    return 0
}
