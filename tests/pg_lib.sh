# tests/pg_lib.sh — a throwaway PostgreSQL for tests (sourced after tests/lib.sh).
#
#   pg_need                 # skips the whole script (TAP "1..0 # SKIP") without the binaries
#   pg_start                # initdb + pg_ctl as an unprivileged user, unix socket only;
#                           # sets PG_HOST (the socket directory), PG_DIR
#   pg_db NAME              # creates database NAME (once); prints a --metadata string
#   pg_stop / pg_restart    # pg_ctl stop -m fast / start again on the same data
#
# PG_FSYNC=on keeps fsync on (benchmarks); tests turn it off.
# The cluster lives in its own directory outside $T_DIR (the server runs as another user
# and $T_DIR is 0700), listens on no TCP port, trusts local connections, and is stopped
# and removed when the script exits.
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
PG_USER=${PG_USER:-postgres}

pg_need() {
	if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ] || [ ! -x "$PG_BIN/pg_ctl" ]; then
		echo "1..0 # SKIP PostgreSQL server binaries not found (apt-get install postgresql)"
		exit 0
	fi
	if [ "$(id -u)" -eq 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
		echo "1..0 # SKIP no user '$PG_USER' to run PostgreSQL as"
		exit 0
	fi
}

# pg_as CMD... — runs CMD as the PostgreSQL user (as ourselves when not root).
pg_as() {
	if [ "$(id -u)" -eq 0 ]; then
		setpriv --reuid="$PG_USER" --regid="$(id -g "$PG_USER")" --init-groups -- "$@"
	else
		"$@"
	fi
}

pg_start() {
	PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/step-pg.XXXXXX")
	chmod 755 "$PG_DIR"
	[ "$(id -u)" -eq 0 ] && chown "$PG_USER" "$PG_DIR"
	PG_HOST=$PG_DIR
	T_CLEANUP_EXTRA="${T_CLEANUP_EXTRA:-} pg_cleanup;"
	pg_as "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$PG_USER" --auth=trust -E UTF8 \
		--no-instructions >"$PG_DIR/initdb.log" 2>&1 || {
		cat "$PG_DIR/initdb.log" >&2
		return 1
	}
	pg_restart
}

pg_restart() {
	pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -t 60 \
		-o "-c listen_addresses='' -k $PG_DIR -c fsync=${PG_FSYNC:-off} -c max_connections=200" \
		start >/dev/null
}

pg_stop() {
	pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 60 stop >/dev/null
}

pg_cleanup() {
	[ -n "${PG_DIR:-}" ] || return 0
	[ -f "$PG_DIR/data/postmaster.pid" ] && pg_stop 2>/dev/null
	rm -rf "$PG_DIR"
}

# pg_psql SQL — runs SQL on database postgres.
pg_psql() {
	"$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -U "$PG_USER" -d "${2:-postgres}" \
		-At -c "$1"
}

pg_db() {
	pg_psql "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1 ||
		pg_psql "CREATE DATABASE \"$1\"" >/dev/null
	echo "host=$PG_HOST user=$PG_USER dbname=$1"
}
