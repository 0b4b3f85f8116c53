# _cubbi_values KIND CUR: candidate words for a value of KIND into COMPREPLY.
_cubbi_values() {
  local kind=$1 cur=$2 words=
  COMPREPLY=()
  case $kind in
    =*) words=${kind#=};;
    file) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -f -- "$cur"); return;;
    dir) compopt -o filenames 2>/dev/null; mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return;;
    command) mapfile -t COMPREPLY < <(compgen -c -- "$cur"); return;;
@ARMS@
    sh:*) words=$(eval "${kind#sh:}" 2>/dev/null);;
    *) return;;
  esac
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
}

# _cubbi_node NODE FIRST: complete COMP_WORDS[FIRST..COMP_CWORD] as arguments of NODE.
_cubbi_node() {
  local node=$1 i=$2 cur=${COMP_WORDS[COMP_CWORD]} w valopt= dashdash= pos=0 kind n
  COMPREPLY=()
  while (( i < COMP_CWORD )); do
    w=${COMP_WORDS[i]}
    if [[ -z $dashdash && $w == -- ]]; then
      dashdash=1
    elif [[ -z $dashdash && $w == -?* ]]; then
      if [[ -n ${_cubbi_val["$node|$w"]+x} ]]; then
        if [[ ${COMP_WORDS[i+1]} == = ]]; then
          (( i++ ))
          if (( i == COMP_CWORD )); then valopt=$w; cur=; break; fi
        fi
        if (( i + 1 == COMP_CWORD )); then valopt=$w; break; fi
        (( i++ ))
      fi
    elif (( pos == 0 )) && [[ -n ${_cubbi_subs[$node]+x} && " ${_cubbi_subs[$node]} " == *" $w "* ]]; then
      node="$node $w"
    else
      (( pos++ ))
    fi
    (( i++ ))
  done
  if [[ -z $valopt && -z $dashdash && $cur == -*=* && -n ${_cubbi_val["$node|${cur%%=*}"]+x} ]]; then
    local opt=${cur%%=*}
    _cubbi_values "${_cubbi_val["$node|$opt"]}" "${cur#*=}"
    COMPREPLY=("${COMPREPLY[@]/#/$opt=}")
    return
  fi
  if [[ -n $valopt ]]; then
    _cubbi_values "${_cubbi_val["$node|$valopt"]}" "$cur"
    return
  fi
  if [[ -z $dashdash && $cur == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "${_cubbi_opts[$node]}" -- "$cur")
    return
  fi
  if (( pos == 0 )) && [[ -n ${_cubbi_subs[$node]+x} ]]; then
    mapfile -t COMPREPLY < <(compgen -W "${_cubbi_subs[$node]}" -- "$cur")
    return
  fi
  n=${_cubbi_args["$node|n"]:-0}
  if (( pos < n )); then
    kind=${_cubbi_args["$node|$pos"]}
  else
    kind=${_cubbi_args["$node|rest"]}
  fi
  _cubbi_values "$kind" "$cur"
}

# cubbi [-r REMOTE] SUB ARGS...: the dispatcher's forms.
_cubbi() {
  local i=1 w cur=${COMP_WORDS[COMP_CWORD]} node
  COMPREPLY=()
  while (( i < COMP_CWORD )); do
    w=${COMP_WORDS[i]}
    case $w in
      -r|--remote)
        [[ ${COMP_WORDS[i+1]} == = ]] && (( i++ ))
        if (( i + 1 == COMP_CWORD )); then
          [[ $cur == = ]] && cur=
          _cubbi_values remote "$cur"; return
        fi
        (( i += 2 ));;
      --remote=*) (( i++ ));;
      *) break;;
    esac
  done
  if (( i == COMP_CWORD )); then
    if [[ $cur == -* ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$_cubbi_dispatch_opts ${_cubbi_opts[cubbi-create]}" -- "$cur")
    else
      local plugins
      plugins=$(compgen -c -- "cubbi-$cur" 2>/dev/null | sed 's/^cubbi-//')
      mapfile -t COMPREPLY < <(compgen -W "$_cubbi_commands help session $plugins" -- "$cur" | sort -u)
      if [[ $cur == */* || $cur == .* || $cur == ~* ]]; then
        compopt -o filenames 2>/dev/null
        mapfile -t -O ${#COMPREPLY[@]} COMPREPLY < <(compgen -d -- "$cur")
      fi
    fi
    return
  fi
  w=${COMP_WORDS[i]}
  case $w in
    help)
      (( i + 1 == COMP_CWORD )) && mapfile -t COMPREPLY < <(compgen -W "$_cubbi_commands" -- "$cur")
      return;;
    session)
      if (( i + 1 == COMP_CWORD )); then
        mapfile -t COMPREPLY < <(compgen -W "${!_cubbi_session[*]}" -- "$cur")
        return
      fi
      node=${_cubbi_session[${COMP_WORDS[i+1]}]}
      [[ -n $node ]] && _cubbi_node "$node" $(( i + 2 ))
      return;;
    -*) _cubbi_node cubbi-create "$i"; return;;
  esac
  if [[ -n ${_cubbi_opts[cubbi-$w]+x} ]]; then
    _cubbi_node "cubbi-$w" $(( i + 1 ))
  else  # cubbi PATH|URL ARGS: cubbi-create's switches
    _cubbi_node cubbi-create $(( i + 1 ))
  fi
}

_cubbi_command() {
  local name=${1##*/}
  [[ -n ${_cubbi_opts[$name]+x} ]] || name=${COMP_WORDS[0]##*/}
  _cubbi_node "$name" 1
}

complete -F _cubbi cubbi
complete -F _cubbi_command @COMMANDS@
