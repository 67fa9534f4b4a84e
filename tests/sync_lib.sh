# tests/sync_lib.sh — helpers shared by the sync/restore tests (t25xx, t5xxx).
# Sourced after tests/lib.sh.

# make_awkward_tree DIR — the tree a real home directory has: non-ASCII names, spaces,
# empty files and directories, symlinks (one dangling), executables, block-boundary
# sizes, a few-MiB file. Fixed mtimes (nanoseconds included) so a restore can be
# compared exactly.
make_awkward_tree() {
	d=$1
	mkdir -p "$d/docs/empty dir" "$d/photos 2024" "$d/bin" "$d/deep/a/b/c/d" "$d/r$(printf '\303\251')sum$(printf '\303\251')s"
	printf 'Hello, STEP!\n' >"$d/docs/hello.txt"
	printf 'caf\303\251 cr\303\250me\n' >"$d/docs/r$(printf '\303\251')sum$(printf '\303\251').txt"
	printf 'latin-1 name\n' >"$d/docs/latin1-$(printf '\351')t$(printf '\351').txt"
	: >"$d/docs/empty.txt"
	printf '#!/bin/sh\necho hi\n' >"$d/bin/run.sh"
	chmod 755 "$d/bin/run.sh"
	chmod 600 "$d/docs/hello.txt"
	ln -s ../docs/hello.txt "$d/bin/hello-link"
	ln -s /nonexistent/dangling "$d/bin/dangling"
	ln -s "photos 2024" "$d/dir-link"
	for n in 20479 20480 20481 65535 65536 65537; do
		head -c $n /dev/urandom >"$d/photos 2024/size-$n.bin"
	done
	head -c 3145728 /dev/urandom >"$d/photos 2024/big.raw"
	echo deep >"$d/deep/a/b/c/d/leaf.txt"
	chmod 711 "$d/deep/a"
	find "$d" -mindepth 1 -exec touch -h -d '2021-03-04 05:06:07.123456789' {} +
	touch -d '2020-01-01 00:00:00.5' "$d/docs/empty dir"
}

# tree_listing DIR — every entry below DIR: path, type, mode, mtime (ns), size, link
# target, and an MD5 of file content; sorted. Two trees are identical when these match.
tree_listing() {
	(cd "$1" && find . -mindepth 1 -printf '%P|%y|%m|%T@|%s|%l\n' | LC_ALL=C sort) || return 1
	(cd "$1" && find . -mindepth 1 -type f -print0 | LC_ALL=C sort -z | xargs -0r md5sum) || return 1
}

# same_tree A B — fails with a diff when A and B differ in anything tree_listing shows.
same_tree() {
	tree_listing "$1" >"$T_DIR/listing.a" && tree_listing "$2" >"$T_DIR/listing.b" &&
		diff "$T_DIR/listing.a" "$T_DIR/listing.b"
}

# json_field FILE FIELD — an integer field of the last JSON line in FILE.
json_field() {
	python3 -c 'import json,sys; print(json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1])[sys.argv[2]])' "$1" "$2"
}
