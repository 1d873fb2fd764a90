#!/bin/sh
# test_tokenizer_cli.sh - `loco tokenize`: the ids of the sd-tiny pipeline's
# tokenizer (pipeline folder and tokenizer folder), --json, prompt files with
# NUL bytes, 1 MB prompts, and every error path (exit 1 or 2, a 'loco: '
# message naming the problem, no sanitizer report).
# POSIX sh; run from the repository root.
set -u

. "$(dirname "$0")/cli_lib.sh"
FIX="${LOCO_FIXTURES:-tests/fixtures}"
PIPE="$FIX/sd-tiny/pipeline"
cli_setup test_tokenizer_cli.sh

# run_err DESC PATTERN CMD...: exit 1 or 2, a 'loco: ' line matching PATTERN
# (grep -E) on stderr, nothing on stdout, no sanitizer report
run_err() {
    desc=$1
    pat=$2
    shift 2
    "$@" >"$T/stdout" 2>"$T/stderr"
    rc=$?
    if [ "$rc" -ne 1 ] && [ "$rc" -ne 2 ]; then
        bad_cmd "$desc: exit status $rc, expected 1 or 2"
    elif ! grep -q '^loco: ' "$T/stderr"; then
        bad_cmd "$desc: no 'loco: ...' message on stderr"
    elif ! grep -qE "$pat" "$T/stderr"; then
        bad_cmd "$desc: the message does not match /$pat/"
    elif ! sanitizer_clean; then
        bad_cmd "$desc: sanitizer report"
    elif [ -s "$T/stdout" ]; then
        bad "$desc: printed ids anyway"
    else
        ok "$desc (exit $rc: $(sed -n 1p "$T/stderr"))"
    fi
}

# pad0 IDS N: the line of ids IDS followed by N pad ids 0
pad0() {
    line=$1
    k=$2
    while [ "$k" -gt 0 ]; do line="$line 0"; k=$((k - 1)); done
    echo "$line"
}

echo "loco tokenize: $LOCO"
want=$(pad0 "49406 320 1125 539 320 786 49407" 70)
run_ok "pipeline folder: 'a photo of a man'" "$LOCO" tokenize "$PIPE" --prompt "a photo of a man"
check "  the 77 ids of vectors.safetensors ids[0]" "[ \"\$(cat '$T/stdout')\" = '$want' ]"
run_ok "tokenizer folder: the same" "$LOCO" tokenize "$PIPE/tokenizer" --prompt "A photo   of a MAN"
check "  the same 77 ids" "[ \"\$(cat '$T/stdout')\" = '$want' ]"

run_ok "--json, '!' as the pad token" "$LOCO" tokenize "$PIPE" --prompt "Hello, World!!!" --json
check "  n_real 8, not truncated" "grep -q '\"n_real\": 8, \"truncated\": false' '$T/stdout'"
check "  '!!!' gives three pad ids" "grep -q '\"ids\": \\[49406, 3306, 267, 1002, 0, 0, 0, 49407, 0, ' '$T/stdout'"
check "  the tokens" "grep -qF '\"tokens\": [\"<|startoftext|>\", \"hello</w>\", \",</w>\", \"world</w>\", \"!\", \"!\", \"!\", \"<|endoftext|>\"]' '$T/stdout'"

printf 'a\000photo of\000 a man' >"$T/nul.txt"
run_ok "--prompt-file with NUL bytes (dropped)" "$LOCO" tokenize "$PIPE" --prompt-file "$T/nul.txt"
check "  as 'aphoto of a man'" "[ \"\$(cat '$T/stdout')\" = \"\$('$LOCO' tokenize '$PIPE' --prompt 'aphoto of a man')\" ]"

# 1 MB: cut to 75 tokens, with a warning (not with --quiet)
printf 'a photo of a man wearing glasses, ' >"$T/one"
k=1
while [ "$k" -lt 32768 ]; do cat "$T/one" "$T/one" >"$T/two" && mv "$T/two" "$T/one" && k=$((k * 2)); done
run_ok "a 1 MB prompt file" "$LOCO" tokenize "$PIPE" --prompt-file "$T/one" --json
check "  77 ids, truncated, the end token last" "grep -q '\"n_real\": 77, \"truncated\": true' '$T/stdout' && grep -q ', 49407\\],' '$T/stdout'"
check "  a warning says so" "grep -q 'more than 75 tokens' '$T/stderr'"
run_ok "  --quiet" "$LOCO" --quiet tokenize "$PIPE" --prompt-file "$T/one"
check "  no warning" "[ ! -s '$T/stderr' ]"

echo "errors"
run_err "invalid UTF-8 in --prompt" "not UTF-8: byte 3 " "$LOCO" tokenize "$PIPE" --prompt "$(printf 'caf\351')"
printf 'ok \342\202' >"$T/bad.txt"
run_err "invalid UTF-8 in --prompt-file" "not UTF-8: byte 3 " "$LOCO" tokenize "$PIPE" --prompt-file "$T/bad.txt"
run_err "missing MODEL" "missing MODEL" "$LOCO" tokenize --prompt "a"
run_err "no prompt" "one of --prompt and --prompt-file" "$LOCO" tokenize "$PIPE"
run_err "both prompts" "one of --prompt and --prompt-file" "$LOCO" tokenize "$PIPE" --prompt a --prompt-file "$T/nul.txt"
run_err "unknown option" "unknown or incomplete option '--max'" "$LOCO" tokenize "$PIPE" --prompt a --max 3
run_err "--prompt without its value" "unknown or incomplete option '--prompt'" "$LOCO" tokenize "$PIPE" --prompt
run_err "two models" "unexpected argument" "$LOCO" tokenize "$PIPE" "$PIPE" --prompt a
run_err "MODEL without a tokenizer" "neither a tokenizer folder" "$LOCO" tokenize "$FIX/unet-small" --prompt a
run_err "MODEL missing" "no such folder" "$LOCO" tokenize "$T/none" --prompt a
run_err "--prompt-file missing" "prompt-file .*No such file" "$LOCO" tokenize "$PIPE" --prompt-file "$T/none.txt"
run_err "--prompt-file a folder" "not a regular file" "$LOCO" tokenize "$PIPE" --prompt-file "$T"
if mkfifo "$T/fifo" 2>/dev/null; then
    run_err "--prompt-file a FIFO (never opened)" "not a regular file" "$LOCO" tokenize "$PIPE" --prompt-file "$T/fifo"
fi
mkdir "$T/tok"
cp "$PIPE/tokenizer/vocab.json" "$PIPE/tokenizer/merges.txt" "$T/tok/"
chmod u+w "$T/tok/merges.txt"
printf 'zzzq x\n' >>"$T/tok/merges.txt"
run_ok "merges past the 48894 CLIPTokenizer reads are ignored" "$LOCO" tokenize "$T/tok" --prompt a
{ sed -n 1p "$PIPE/tokenizer/merges.txt"; echo "zzzq x"; sed -n '2,$p' "$PIPE/tokenizer/merges.txt"; } >"$T/tok/merges.txt"
run_err "a merge naming a token vocab.json lacks" "merges.txt: line 2: token 'zzzq' is not in vocab.json" \
    "$LOCO" tokenize "$T/tok" --prompt a
rm "$T/tok/merges.txt"
run_err "no merges.txt" "merges.txt: missing" "$LOCO" tokenize "$T/tok" --prompt a

summary
