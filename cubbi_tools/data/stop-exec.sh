# Run by LocalEngine.exec_stop as root in the session: sh -c "$(this)" stop MARK.
# Hang up every process whose command line names the mark $1, and their
# descendants and session members; KILL what is left a second later (done at
# once when nothing is left).
all=" "
for d in /proc/[0-9]*; do
    [ "${d#/proc/}" = "$$" ] && continue  # this script names the mark too
    case " $(tr '\0' ' ' < "$d/cmdline" 2>/dev/null) " in
        *" $1 "*) all="$all${d#/proc/} " ;;
    esac
done
[ "$all" = " " ] && exit 0
for round in 1 2 3 4 5 6; do
    for d in /proc/[0-9]*; do
        s=$(cat "$d/stat" 2>/dev/null) || continue
        set -- ${s##*) }
        case "$all" in *" ${d#/proc/} "*) continue ;; esac
        case "$all" in *" $2 "*|*" $4 "*) all="$all${d#/proc/} " ;; esac
    done
done
kill -HUP $all 2>/dev/null
# done as soon as they are gone (a zombie is gone), at most a second: the
# server's terminal and the client waiting for its exit do not wait longer
i=0
while [ $i -lt 20 ]; do
    left=
    for p in $all; do
        { read -r s < "/proc/$p/stat"; } 2>/dev/null || continue
        set -- ${s##*) }
        [ "$1" = Z ] || left=1
    done
    [ -z "$left" ] && exit 0
    sleep 0.05 2>/dev/null || { sleep 1; break; }
    i=$((i + 1))
done
kill -KILL $all 2>/dev/null
exit 0
