_cubbi__dispatch() {
  local curcontext=$curcontext state state_descr line ret=1
  typeset -A opt_args
  _arguments -C \
    @SPECS@ && ret=0
  case $state in
    cmd)
      local -a cmds; cmds=(@COMMANDS@ 'help:show the manual page of a command' 'session:the original cubbi'\''s forms: session create|list|close|connect|logs')
      _describe -t commands 'cubbi command' cmds && ret=0
      _files -/ && ret=0;;
    args)
      case $words[1] in
        help)
          local -a names; names=(@COMMANDS@)
          (( CURRENT == 2 )) && _describe -t commands 'command' names && ret=0;;
        session)
          if (( CURRENT == 2 )); then
            local -a forms; forms=(@FORMS@)
            _describe -t commands 'session form' forms && ret=0
          else
            local form=$words[2]
            shift words; (( CURRENT-- ))
            case $form in
@FORM_ARMS@
            esac
          fi;;
        *)
          if (( $+functions[_cubbi__cubbi_$words[1]] )); then
            _cubbi__cubbi_$words[1] && ret=0
          else
            _cubbi__cubbi_create && ret=0
          fi;;
      esac;;
  esac
  return ret
}

_cubbi() {
  case $service in
    cubbi) _cubbi__dispatch;;
@SERVICE_ARMS@
  esac
}

_cubbi "$@"
