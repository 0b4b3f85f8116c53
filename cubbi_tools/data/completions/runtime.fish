function __cubbi_values --argument-names kind
    switch $kind
        case '=*'
            string split ' ' -- (string sub -s 2 -- $kind)
        case file
            __fish_complete_path (commandline -ct)
        case dir
            __fish_complete_directories (commandline -ct)
        case command
            complete -C (commandline -ct)
@ARMS@
        case 'sh:*'
            eval (string sub -s 4 -- $kind) 2>/dev/null
    end
end

function __cubbi_valopts --argument-names node
    switch $node
@VALOPTS@
    end
end

function __cubbi_subs --argument-names node
    switch $node
@SUBS@
    end
end

function __cubbi_poskind --argument-names node pos
    switch "$node|$pos"
@POS@
    end
end

# Walk the words before the cursor: sets __cubbi_node, __cubbi_pos, __cubbi_valopt.
function __cubbi_walk
    set -l tokens (commandline -opc)
    set -g __cubbi_node (string replace -r '.*/' '' -- $tokens[1])
    set -g __cubbi_pos 0
    set -g __cubbi_valopt ''
    set -l dashdash 0
    set -e tokens[1]
    while set -q tokens[1]
        set -l w $tokens[1]
        set -e tokens[1]
        if test $dashdash = 0; and test "$w" = --
            set dashdash 1
        else if test $dashdash = 0; and string match -q -- '-?*' $w
            if contains -- $w (__cubbi_valopts $__cubbi_node)
                if set -q tokens[1]
                    set -e tokens[1]
                else
                    set -g __cubbi_valopt $w
                end
            end
        else if test $__cubbi_pos = 0; and contains -- $w (__cubbi_subs $__cubbi_node)
            set -g __cubbi_node "$__cubbi_node $w"
        else
            set -g __cubbi_pos (math $__cubbi_pos + 1)
        end
    end
end

# __cubbi_at NODE [POS]: the cursor is in NODE's arguments (at positional POS).
function __cubbi_at
    __cubbi_walk
    test "$__cubbi_node" = "$argv[1]"; or return 1
    set -q argv[2]; and test "$__cubbi_pos" != "$argv[2]"; and return 1
    return 0
end

function __cubbi_posargs
    __cubbi_walk
    test -z "$__cubbi_valopt"; or return
    set -l kind (__cubbi_poskind $__cubbi_node $__cubbi_pos)
    test -n "$kind"; or set kind (__cubbi_poskind $__cubbi_node '*')
    test -n "$kind"; and __cubbi_values $kind
end

# The dispatcher: the words after cubbi [-r REMOTE].
function __cubbi_rest
    set -l tokens (commandline -opc)
    set -e tokens[1]
    while set -q tokens[1]
        switch $tokens[1]
            case -r --remote
                set -e tokens[1..2]
            case '--remote=*'
                set -e tokens[1]
            case '*'
                break
        end
    end
    string join \n -- $tokens
end

function __cubbi_first
    test (count (__cubbi_rest)) = 0
end

function __cubbi_delegate
    set -l rest (__cubbi_rest)
    switch $rest[1]
        case help
            test (count $rest) = 1; and __cubbi_subs_of_cubbi
            return
        case session
            if test (count $rest) = 1
                __cubbi_session_forms
                return
            end
            set -e rest[1]
            switch $rest[1]
@SESSION@
                case '*'
                    return
            end
        case '-*'
            set rest cubbi-create $rest
        case '*'
            if contains -- cubbi-$rest[1] (__cubbi_commands)
                set rest[1] cubbi-$rest[1]
            else
                set rest[1] cubbi-create
            end
    end
    complete -C (string join ' ' -- (string escape -- $rest) (commandline -ct))
end
