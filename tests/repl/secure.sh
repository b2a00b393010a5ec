#!/bin/bash
# Security hardening of ferryd, with real daemons: a group/world-readable
# secret or TLS key is refused; ferryd listens only where it was told
# (ss -ltnp); TLS / plaintext mismatch refused with a clear error; a pair
# over TLS-PSK and over certificates; repeated authentication failures are
# slowed down; the control socket is 0600, or 0660 with --socket-group, and
# a user outside the group is refused (when root).
. "$(dirname "$0")/lib.sh"

# Every TCP socket pid listens on, as "ADDR:PORT" lines.
listening() { ss -Hltnp | grep "pid=$1," | awk '{print $4}' | sort; }

# ---- secret files must not be readable by others ---------------------------
chmod 644 "$T/secret"
expect 1 "world-readable secret refused" -- "$FERRYD" --pool "$T/b" --listen 127.0.0.1:0 \
	--secret-file "$T/secret"
check "refusal says why" grep -q "secret-file .* accessible by group or others (mode 0644)" \
	<<<"$ERR$(cat "$T/b/ferryd.log" 2>/dev/null)"
chmod 640 "$T/secret"
expect 1 "group-readable secret refused" -- "$FERRYD" --pool "$T/b" --listen 127.0.0.1:0 \
	--secret-file "$T/secret"
chmod 600 "$T/secret"

# ---- nothing listens where it was not told to ---------------------------------
expect 0 "ferryd with only --pool" -- "$FERRYD" --pool "$T/p"
pid=$(daemon_pid "$T/p")
check "only --pool: no TCP listener" test -z "$(listening "$pid")"
stop_daemon "$T/p"
expect 0 "site b starts (listens)" -- site_start b
pid=$(daemon_pid "$T/b")
check "--listen: exactly its port" test "$(listening "$pid")" = "127.0.0.1:$PORT_b"
ISCSI_PORT=$(free_port)
expect 0 "ferryd with --iscsi" -- "$FERRYD" --pool "$T/i" --iscsi "127.0.0.1:$ISCSI_PORT"
pid=$(daemon_pid "$T/i")
check "--iscsi: exactly its port" test "$(listening "$pid")" = "127.0.0.1:$ISCSI_PORT"
stop_daemon "$T/i"

# ---- TLS-PSK pair (the default) --------------------------------------------------
expect 0 "site a starts" -- site_start a
B="127.0.0.1:$PORT_b"
expect 0 "create db" -- fa volume create db --size 8M --object-size 1M
rand_write fa db 0 65536
expect 0 "pair create over TLS" -- fa pair create db --peer "$B" --period 3600
expect 0 "sync" -- fa pair sync db --wait
check_synced db

# ---- a plaintext site against a TLS one: refused, clearly, both ways ---------
"$FERRYD" --pool "$T/c" --log-level debug --secret-file "$T/secret" --plaintext
expect 0 "create pc" -- "$FERRY_BIN" --pool "$T/c" volume create pc --size 4M
expect_err 1 "requires TLS.*plaintext" "plaintext primary vs TLS secondary" -- \
	"$FERRY_BIN" --pool "$T/c" pair create pc --peer "$B"
check "TLS side logs the mismatch" grep -q "runs with --plaintext but this site requires TLS" \
	"$T/b/ferryd.log"
"$FERRYD" --pool "$T/d" --log-level debug --secret-file "$T/secret" --plaintext \
	--listen 127.0.0.1:0
PORT_d=$(sed -n 's/.*accepting peers on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$T/d/ferryd.log" | tail -n 1)
expect 0 "create dd" -- fa volume create dd --size 4M
expect_err 1 "runs with --plaintext" "TLS primary vs plaintext secondary" -- \
	fa pair create dd --peer "127.0.0.1:$PORT_d"
check "plaintext side logs the mismatch" grep -q "uses TLS but this site runs with --plaintext" \
	"$T/d/ferryd.log"
expect 0 "plaintext pair between two --plaintext sites" -- \
	"$FERRY_BIN" --pool "$T/c" pair create pc --peer "127.0.0.1:$PORT_d"
expect 0 "plaintext sync" -- "$FERRY_BIN" --pool "$T/c" pair sync pc --wait
stop_daemon "$T/c"
stop_daemon "$T/d"

# ---- repeated authentication failures are slowed down --------------------------
printf 'a-wrong-secret-%s\n' "$RANDOM" >"$T/wrong"
chmod 600 "$T/wrong"
"$FERRYD" --pool "$T/w" --log-level debug --secret-file "$T/wrong"
expect 0 "create wv" -- "$FERRY_BIN" --pool "$T/w" volume create wv --size 4M
for i in 1 2 3; do
	expect 1 "wrong secret attempt $i" -- "$FERRY_BIN" --pool "$T/w" pair create wv --peer "$B"
done
check "the 2nd and 3rd attempts were delayed" \
	test "$(grep -c "delaying 127.0.0.1:.* after failed authentications" "$T/b/ferryd.log")" -ge 2
t0=$(date +%s%N)
expect 0 "good peer after the failures still works (delayed)" -- fa pair sync db --wait
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
echo "sync after 3 failures took $ms ms"
check "the good attempt after 3 failures waited ~1 s" test "$ms" -ge 800
t0=$(date +%s%N)
expect 0 "next sync is not delayed (success cleared the address)" -- fa pair sync db --wait
t1=$(date +%s%N)
check "not delayed any more" test $(((t1 - t0) / 1000000)) -lt 1000
stop_daemon "$T/w"

# ---- certificates -------------------------------------------------------------------
site_stop a
site_stop b
mkdir -p "$T/pki"
(
	cd "$T/pki" || exit 1
	ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
	openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj /CN=ferry-ca &&
	for s in a b; do
		openssl req $ec -keyout $s.key -out $s.csr -subj /CN=site-$s &&
		openssl x509 -req -in $s.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
			-out $s.crt -days 2 || exit 1
	done
) >/dev/null 2>&1
check "test PKI made" test -s "$T/pki/b.crt"
chmod 644 "$T/pki/b.key"
expect 1 "readable TLS key refused" -- "$FERRYD" --pool "$T/b" --listen "127.0.0.1:$PORT_b" \
	--secret-file "$T/secret" --tls-cert "$T/pki/b.crt" --tls-key "$T/pki/b.key" \
	--tls-ca "$T/pki/ca.crt"
chmod 600 "$T/pki/a.key" "$T/pki/b.key"
for s in a b; do
	extra=()
	[ $s = b ] && extra=(--listen "127.0.0.1:$PORT_b")
	expect 0 "site $s starts with certificates" -- "$FERRYD" --pool "$T/$s" --log-level debug \
		"${extra[@]}" --secret-file "$T/secret" --tls-cert "$T/pki/$s.crt" \
		--tls-key "$T/pki/$s.key" --tls-ca "$T/pki/ca.crt"
done
rand_write fa db 4096 8192
expect 0 "sync over certificate TLS" -- fa pair sync db --wait
check_synced db
site_stop a
site_stop b

# ---- the control socket -------------------------------------------------------------
expect 0 "ferryd default socket" -- "$FERRYD" --pool "$T/s"
check "socket mode 0600" test "$(stat -c %a "$T/s/ferryd.sock")" = 600
stop_daemon "$T/s"
if [ "$(id -u)" = 0 ] && command -v useradd >/dev/null && command -v runuser >/dev/null; then
	made_user=0 made_group=0
	id ferrytest >/dev/null 2>&1 || { useradd -M -s /bin/false ferrytest && made_user=1; }
	getent group ferrysock >/dev/null || { groupadd ferrysock && made_group=1; }
	trap '[ $made_user = 1 ] && userdel ferrytest; [ $made_group = 1 ] && groupdel ferrysock; repl_cleanup' EXIT
	# Let the user reach the socket file: only its mode must protect it.
	chmod 711 "$T"
	expect 0 "ferryd --socket-group" -- "$FERRYD" --pool "$T/s" --socket-group ferrysock
	chmod 711 "$T/s"
	check "socket mode 0660" test "$(stat -c %a "$T/s/ferryd.sock")" = 660
	check "socket group" test "$(stat -c %G "$T/s/ferryd.sock")" = ferrysock
	expect 1 "user outside the group is refused" -- runuser -u ferrytest -- \
		"$FERRY_BIN" --pool "$T/s" volume list
	check "refusal is a permission error" grep -qi "permission denied" <<<"$ERR"
	usermod -a -G ferrysock ferrytest
	expect 0 "user in the group is served" -- runuser -u ferrytest -- \
		"$FERRY_BIN" --pool "$T/s" volume list
	gpasswd -d ferrytest ferrysock >/dev/null
	stop_daemon "$T/s"
	expect 1 "unknown --socket-group refused" -- "$FERRYD" --pool "$T/s" \
		--socket-group no-such-group-ferry
else
	echo "not root (or no useradd/runuser): socket group checks skipped"
fi

finish
