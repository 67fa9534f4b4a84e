#!/bin/sh
# t5000-restore-hostile.sh — restore treats the manifest as hostile: absolute paths and
# ".." are refused, a restored symlink is never written through, an object whose MD5
# differs from the manifest is not left behind, a truncated manifest is an error.
# Nothing is ever written outside --to.
. "$TOP/tests/lib.sh"

start_stepd --auth open || exit 1
echo demo >"$T_DIR/pw"
SS="$BIN/stepsync --server 127.0.0.1:$STEPD_PORT --user demo --password-file $T_DIR/pw"
mkdir -p "$T_DIR/outside"

printf 'payload\n' >"$T_DIR/payload"
SHA=$(sha256sum "$T_DIR/payload" | cut -d" " -f1)
MD5=$(md5sum "$T_DIR/payload" | cut -d" " -f1)
$SS put --key "o.$SHA" "$T_DIR/payload" >/dev/null || exit 1

# manifest NAME SEQ ENTRY... — uploads a manifest (header, entries, trailer) as s.NAME.SEQ.
manifest() {
	name=$1 seq=$2
	shift 2
	{
		printf '{"stepsync_manifest":1,"name":"%s","seq":%d,"time":1,"files":0,"dirs":0,"symlinks":0,"bytes":0}\n' "$name" "$seq"
		for e in "$@"; do printf '%s\n' "$e"; done
		printf '{"end":%d}\n' $#
	} >"$T_DIR/m.$name"
	$SS put --key "$(printf 's.%s.%010d' "$name" "$seq")" "$T_DIR/m.$name" >/dev/null
}
FILE_ENTRY() { # FILE_ENTRY PATH [MD5]
	printf '{"path":"%s","type":"file","mode":420,"mtime_ns":0,"size":8,"key":"o.%s","md5":"%s"}' \
		"$1" "$SHA" "${2:-$MD5}"
}

ok "a good hand-made manifest restores (the harness itself works)" '
	manifest good 1 "$(FILE_ENTRY dir/f.txt)" &&
	$SS restore --name good --snapshot 1 --to "$T_DIR/r0" &&
	cmp "$T_DIR/payload" "$T_DIR/r0/dir/f.txt"
'

ok "'..' in a path is refused and nothing escapes" '
	manifest dotdot 1 "$(FILE_ENTRY ../../outside/escaped)" &&
	expect_exit 1 $SS restore --name dotdot --snapshot 1 --to "$T_DIR/r1/x" 2>"$T_DIR/e1" &&
	grep -q "unsafe or invalid entry" "$T_DIR/e1" &&
	[ -z "$(ls -A "$T_DIR/outside")" ] && [ ! -e "$T_DIR/escaped" ]
'

ok "an absolute path is refused" '
	manifest abs 1 "$(FILE_ENTRY "$T_DIR/outside/abs")" &&
	expect_exit 1 $SS restore --name abs --snapshot 1 --to "$T_DIR/r2" &&
	[ -z "$(ls -A "$T_DIR/outside")" ]
'

ok "a symlink in the manifest is never written through" '
	manifest link 1 \
		"{\"path\":\"a\",\"type\":\"symlink\",\"mode\":511,\"mtime_ns\":0,\"target\":\"$T_DIR/outside\"}" \
		"$(FILE_ENTRY a/pwned)" &&
	expect_exit 1 $SS restore --name link --snapshot 1 --to "$T_DIR/r3" 2>"$T_DIR/e3" &&
	grep -q "refusing" "$T_DIR/e3" &&
	[ -L "$T_DIR/r3/a" ] && [ -z "$(ls -A "$T_DIR/outside")" ]
'

ok "a symlink planted in --to is not followed either" '
	mkdir -p "$T_DIR/r4" && ln -s "$T_DIR/outside" "$T_DIR/r4/dir" &&
	expect_exit 1 $SS restore --name good --snapshot 1 --to "$T_DIR/r4" &&
	[ -z "$(ls -A "$T_DIR/outside")" ]
'

ok "an object that does not match the manifest MD5 is not left behind" '
	manifest badmd5 1 "$(FILE_ENTRY f.txt 0123456789abcdef0123456789abcdef)" &&
	expect_exit 1 $SS restore --name badmd5 --snapshot 1 --to "$T_DIR/r5" &&
	[ ! -e "$T_DIR/r5/f.txt" ]
'

ok "a truncated manifest is an error, not a short success" '
	printf "{\"stepsync_manifest\":1,\"name\":\"trunc\",\"seq\":1,\"time\":1,\"files\":0,\"dirs\":0,\"symlinks\":0,\"bytes\":0}\n%s\n" \
		"$(FILE_ENTRY f.txt)" >"$T_DIR/m.trunc" &&
	$SS put --key s.trunc.0000000001 "$T_DIR/m.trunc" >/dev/null &&
	expect_exit 1 $SS restore --name trunc --snapshot 1 --to "$T_DIR/r6" 2>"$T_DIR/e6" &&
	grep -q "truncated or malformed" "$T_DIR/e6"
'

ok "a manifest naming another snapshot is refused" '
	manifest other 1 "$(FILE_ENTRY f.txt)" &&
	$SS put --key s.swapped.0000000001 "$T_DIR/m.other" >/dev/null &&
	expect_exit 1 $SS restore --name swapped --snapshot 1 --to "$T_DIR/r7"
'

done_testing
