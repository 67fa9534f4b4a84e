#!/bin/sh
# t1110 — two extensions for caching clients: objgen (LOGIN carries the store's store_id
# and the user's obj_gen, LIST carries obj_gen; only removing a complete object moves it,
# both survive a restart) and any_block (FILE GET want_block_size and FILE DOWNLOAD
# block_size cut an object in blocks of the client's size; absent or invalid: as before).
. "$TOP/tests/lib.sh"

W="python3 $TOP/tests/server_wire.py"

t_start 'stepd starts' --auth open
ok 'objgen: store_id, obj_gen on LOGIN and LIST, moved by FILE DELETE only' \
	"$W objgen $STEPD_PORT '$T_DIR/sid'"
ok 'any_block: GET want_block_size, DOWNLOAD block_size, defaults unchanged' \
	"$W any_block $STEPD_PORT"
t_stop 'SIGTERM exits 0'
t_start 'stepd restarts over the same root' --auth open
ok 'objgen: same store_id and obj_gen after the restart' "$W objgen_again $STEPD_PORT '$T_DIR/sid'"
t_stop 'SIGTERM exits 0'
STEPD_NAME=other
t_start 'a second store' --auth open
ok 'another root has another store_id' '
	python3 -c "
import socket, struct, json, hashlib, sys
s = socket.create_connection((\"127.0.0.1\", $STEPD_PORT))
j = json.dumps({\"type\": \"AUTH\", \"operation\": \"LOGIN\", \"direction\": \"REQUEST\",
    \"username\": \"x\", \"password\": hashlib.md5(b\"x\").hexdigest()}).encode()
s.sendall(struct.pack(\">II\", len(j), 0) + j)
b = b\"\"
while len(b) < 8 or len(b) < 8 + struct.unpack(\">I\", b[:4])[0]:
    b += s.recv(65536)
rep = json.loads(b[8:8 + struct.unpack(\">I\", b[:4])[0]])
sys.exit(rep[\"store_id\"] == open(\"$T_DIR/sid\").read().strip())"'
t_stop 'SIGTERM exits 0'
done_testing
