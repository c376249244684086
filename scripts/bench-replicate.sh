#!/bin/bash
# bench-replicate.sh: thinback replicate side by side with LINBIT's
# thin-send-recv over ssh, in a User-Mode Linux guest. Two volume groups on
# one kernel stand for two hosts: vgsrc (the source) and vgdst (the "other
# host"), reached through a real OpenSSH server on the guest's loopback
# (127.0.0.1, a throwaway host key and root key made for the run).
#
# 1. Small change. A VOL_SIZE thin LV vgsrc/vol with 2 GiB of random data
#    is replicated once both ways (the fulls are timed too, for the
#    record). Then, REPS times: CHANGE_MIB MiB of random 64 KiB writes, and
#    (order alternating) the same change sent both ways, each including
#    the snapshots on both sides:
#      thinback  thinback replicate vgsrc/vol ssh://root@127.0.0.1/vgdst/vol
#                --rsh "$RSH" --json (snapshot of the source, handshake,
#                compare of the target with its replica snapshot, send and
#                apply, the receiver's snapshot, rotation on both sides)
#      tsr       lvcreate -s of the source, then
#                thin_send OLD NEW | ssh HOST 'thin_recv vgdst/vol2 &&
#                lvcreate -s vgdst/vol2' (thin-send-recv's README workflow
#                plus the receiver's snapshot); the old snapshots' lvremove
#                on both sides follows, untimed.
# 2. A full of FULL_MIB MiB over ssh: a fresh thin LV vgsrc/big holding
#    half random data and half a tar of /usr/bin and /usr/lib (made on the
#    host), replicated REPS times to a target that does not exist yet
#    (order alternating; the targets and snapshots are removed between
#    rounds, untimed):
#      thinback  thinback replicate vgsrc/big ssh://HOST/vgdst/big --create
#      tsr       lvcreate -s of the source, then thin_send NEW | zstd -1 -T0
#                | ssh HOST 'lvcreate -V SIZE -T vgdst/pool -n big2 &&
#                zstd -d | thin_recv vgdst/big2 && lvcreate -s vgdst/big2'
# 3. Bytes on the wire: the guest's loopback interface carries nothing but
#    these ssh connections, so the bytes it received during a command
#    (/proc/net/dev, lo) are what went over TCP both ways, IP and TCP
#    headers and ssh's framing included, counted alike for both tools.
# 4. Resume: thinback replicate of vgsrc/big to a new target; its ssh
#    client is killed (SIGKILL, by PID: the child of thinback named ssh)
#    once half of the full's wire bytes (part 2's median) went over the
#    loopback; replicate runs again and says what it sent.
# Each replica is checked (sha256) against its source once.
#
# The host's root home is read-only in the guest and its shell start-up
# files would run in every ssh session; the guest mounts an empty tmpfs on
# /root, as a server's plain root account would have.
#
# Usage: THIN_SEND_RECV=PATH scripts/bench-replicate.sh
#   THIN_SEND_RECV: a thin_send_recv binary built from
#        https://github.com/LINBIT/thin-send-recv (make EXTRA_CFLAGS=-O2;
#        needs flex)
#   env: REPS=3 CHANGE_MIB=10 FULL_MIB=1024 VOL_SIZE=4G
#        PARTS="small full resume" (which parts to run)
#        TOOLS="thinback tsr" (which tools to run)
#        CHECKPOINT_MIB (replicate's --checkpoint-mib in part 4; default
#        replicate's own)
# Needs root, user-mode-linux, lvm2, thin-provisioning-tools, zstd,
# openssh-server, openssh-client and Go. The guest runs under
# flock /tmp/thinback-guest.lock.
set -euo pipefail

reps=${REPS:-3}
mib=${CHANGE_MIB:-10}
fullmib=${FULL_MIB:-1024}
volsize=${VOL_SIZE:-4G}
parts=${PARTS:-small full resume}
tools=${TOOLS:-thinback tsr}
ckpt=${CHECKPOINT_MIB:-}
tsr=${THIN_SEND_RECV:-}
cd "$(dirname "$0")/.."
if [ -z "$tsr" ] || [ ! -x "$tsr" ]; then
	echo "bench-replicate: set THIN_SEND_RECV to thin-send-recv's thin_send_recv binary" >&2
	exit 1
fi
for p in zstd linux.uml ssh ssh-keygen /usr/sbin/sshd; do
	command -v "$p" >/dev/null || { echo "bench-replicate: $p not found" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/thinback-bench-replicate.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/bin"
go build -o "$work/bin/thinback" ./cmd/thinback
cp "$tsr" "$work/bin/thin_send_recv"
ln -s thin_send_recv "$work/bin/thin_send"
ln -s thin_send_recv "$work/bin/thin_recv"
# The full's data: half random, half binaries and libraries (compressible
# about as a system disk is).
{
	head -c "$((fullmib / 2))M" /dev/urandom
	{ tar -cf - /usr/bin /usr/lib 2>/dev/null || true; } | head -c "$((fullmib - fullmib / 2))M"
} >"$work/mixed.img"
[ "$(stat -c %s "$work/mixed.img")" = $((fullmib * 1048576)) ] || {
	echo "bench-replicate: $work/mixed.img: not $fullmib MiB (too little in /usr/bin and /usr/lib?)" >&2
	exit 1
}

cat >"$work/guest.sh" <<'GUEST'
#!/bin/bash
set -euo pipefail
reps=$1 mib=$2 fullmib=$3 volsize=$4 parts=$5 tools=$6 ckpt=$7
dir=$(dirname "$0")
export PATH=$dir/bin:$PATH
tbf_wire=()
export THINBACK_STATE=$dir/state.db # the source host's state; the receiver's is remote-state.db
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
wire() { sed -n 's/^ *lo: *//p' /proc/net/dev | awk '{print $1}'; }
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
ratio() { awk -v t="$1" -v r="$2" 'BEGIN {printf "thinback time / tsr time: %.2f; thinback speed %.0f %% of tsr\n", t / r, 100 * r / t}'; }
has() { case " $parts " in *" $1 "*) return 0 ;; esac; return 1; }
uses() { case " $tools " in *" $1 "*) return 0 ;; esac; return 1; }
# field NAME FILE: a number from replicate's --json (the first key of that name)
field() { grep -o "\"$1\":[^,}]*" "$2" | head -n1 | cut -d: -f2 | tr -d '"' || true; }
fail() { echo "bench-replicate: $*" >&2; exit 1; }

# --- the other host: sshd on 127.0.0.1
ip link set lo up
mount -t tmpfs -o mode=0700 tmpfs /root
mkdir -p /run/sshd
s=$dir/sshd
mkdir -m 700 "$s"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$s/host_key"
ssh-keygen -q -t ed25519 -N '' -C bench -f "$s/user_key"
cp "$s/user_key.pub" "$s/authorized_keys"
port=2222
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$s/host_key.pub")" >"$s/known_hosts"
cat >"$s/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $s/host_key
PidFile $s/sshd.pid
AuthorizedKeysFile $s/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
PrintLastLog no
SetEnv PATH=$PATH LVM_SYSTEM_DIR=$LVM_SYSTEM_DIR LC_ALL=C THINBACK_STATE=$dir/remote-state.db THINBACK_GUEST=1 THINBACK_UML_WORK=$THINBACK_UML_WORK
EOF
# Without -D sshd forks into the background once its socket listens.
/usr/sbin/sshd -f "$s/sshd_config" -E "$s/sshd.log"
trap 'kill "$(cat "$s/sshd.pid")" 2>/dev/null || true' EXIT
RSH="ssh -F none -o UserKnownHostsFile=$s/known_hosts -o IdentityFile=$s/user_key -o IdentitiesOnly=yes -o BatchMode=yes -p $port"
host=root@127.0.0.1
rsh() { $RSH "$host" "$@"; }
rsh true || fail "ssh to $host failed: $(cat "$s/sshd.log")"

mkpool -s 16G -p 12G vgsrc >/dev/null 2>&1
mkpool -s 16G -p 12G vgdst >/dev/null 2>&1
echo "$(ssh -V 2>&1), to $host port $port"

# tb NAME ARGS...: time a thinback replicate; its --json in $dir/NAME.json
tb() {
	local name=$1 t0 t1 w0 w1
	shift
	w0=$(wire)
	t0=$(now)
	thinback replicate "$@" --rsh "$RSH" --json >"$dir/$name.json" 2>"$dir/$name.err" ||
		fail "thinback replicate $*: exit $?: $(cat "$dir/$name.err")"
	t1=$(now)
	w1=$(wire)
	last_ms=$(ms "$t0" "$t1") last_wire=$((w1 - w0))
}
# tsr_timed NAME COMMANDS: time a shell pipeline of thin-send-recv's
tsr_timed() {
	local name=$1 t0 t1 w0 w1
	shift
	w0=$(wire)
	t0=$(now)
	bash -o pipefail -c "$*" 2>"$dir/$name.err" || fail "$*: exit $?: $(cat "$dir/$name.err")"
	t1=$(now)
	w1=$(wire)
	last_ms=$(ms "$t0" "$t1") last_wire=$((w1 - w0))
}
phases() { # what replicate's --json says of a run
	local sec=(query snapshot transfer apply commit rotate) p out
	out="$(field kind "$1")"
	[ -z "$(field resumed_from "$1")" ] || out+=" from byte $(field resumed_from "$1")"
	out+=", delta $(field delta_bytes "$1") bytes, sent $(field wire_sent_bytes "$1"); in $(field seconds "$1") s:"
	for p in "${sec[@]}"; do out+=" $p $(field "${p}_seconds" "$1")"; done
	echo "$out"
}
export RSH host

if has small; then
	lvcreate -q -V "$volsize" -T vgsrc/pool -n vol >/dev/null 2>&1
	dd if=/dev/urandom of=/dev/vgsrc/vol bs=4M count=512 oflag=direct status=none
	echo "== small change: vgsrc/vol ($volsize, 2 GiB written), first replication (full) both ways"
	if uses thinback; then
		tb small-full vgsrc/vol "ssh://$host/vgdst/vol" --create
		echo "thinback replicate (full): $last_ms ms, $last_wire bytes on the wire ($(phases "$dir/small-full.json"))"
	fi
	if uses tsr; then
		tsr_timed tsr-full "lvcreate -q -s -K -n tsr0 vgsrc/vol >/dev/null 2>&1 &&
			$RSH $host lvcreate -q -V $volsize -T vgdst/pool -n vol2 >/dev/null 2>&1 &&
			thin_send vgsrc/tsr0 | $RSH $host 'thin_recv vgdst/vol2 && lvcreate -q -s -n vol2.r0 vgdst/vol2 >/dev/null 2>&1'"
		echo "lvcreate -s; ssh lvcreate; thin_send | ssh thin_recv (full): $last_ms ms, $last_wire bytes on the wire"
	fi

	change() { # $1 MiB of random 64 KiB writes into the written 2 GiB
		local i=0
		while [ $i -lt $(($1 * 16)) ]; do
			dd if=/dev/urandom of=/dev/vgsrc/vol bs=64k count=1 seek=$(($(od -An -N4 -tu4 /dev/urandom) % 32768)) \
				oflag=direct conv=notrunc status=none
			i=$((i + 1))
		done
	}
	tb_round() {
		uses thinback || return 0
		tb "small-$1" vgsrc/vol "ssh://$host/vgdst/vol"
		tb_ms+=("$last_ms") tb_wire+=("$last_wire")
		line+="thinback $last_ms ms, $last_wire bytes ($(phases "$dir/small-$1.json"))"
	}
	tsr_round() {
		uses tsr || return 0
		tsr_timed "tsr-$1" "lvcreate -q -s -n tsr$1 vgsrc/vol >/dev/null 2>&1 &&
			thin_send vgsrc/tsr$(($1 - 1)) vgsrc/tsr$1 | $RSH $host 'thin_recv vgdst/vol2 && lvcreate -q -s -n vol2.r$1 vgdst/vol2 >/dev/null 2>&1'"
		tsr_ms+=("$last_ms") tsr_wire+=("$last_wire")
		line+="tsr $last_ms ms, $last_wire bytes"
		lvremove -q -y "vgsrc/tsr$(($1 - 1))" >/dev/null
		rsh lvremove -q -y "vgdst/vol2.r$(($1 - 1))" >/dev/null
	}
	echo "== small change: $mib MiB of random 64 KiB writes, $reps rounds"
	tb_ms=() tb_wire=() tsr_ms=() tsr_wire=()
	i=1
	while [ $i -le "$reps" ]; do
		change "$mib"
		line="round $i: "
		if [ $((i % 2)) = 1 ]; then
			tb_round $i
			line+="; "
			tsr_round $i
		else
			tsr_round $i
			line+="; "
			tb_round $i
		fi
		echo "$line"
		i=$((i + 1))
	done
	uses thinback && echo "median: thinback $(median "${tb_ms[@]}") ms, $(median "${tb_wire[@]}") bytes"
	uses tsr && echo "median: tsr $(median "${tsr_ms[@]}") ms, $(median "${tsr_wire[@]}") bytes"
	uses thinback && uses tsr && ratio "$(median "${tb_ms[@]}")" "$(median "${tsr_ms[@]}")"
	a=$(sha256sum </dev/vgsrc/vol)
	if uses thinback; then [ "$(sha256sum </dev/vgdst/vol)" = "$a" ] || fail "vgdst/vol differs from vgsrc/vol"; fi
	if uses tsr; then [ "$(sha256sum </dev/vgdst/vol2)" = "$a" ] || fail "vgdst/vol2 differs from vgsrc/vol"; fi
	echo "the replicas equal the source (sha256)"
	lvs -o lv_name,lv_attr,lv_size,origin,lv_tags vgsrc vgdst
fi

if has full || has resume; then
	lvcreate -q -V "${fullmib}M" -T vgsrc/pool -n big >/dev/null 2>&1
	dd if="$dir/mixed.img" of=/dev/vgsrc/big bs=4M oflag=direct status=none
	want=$(sha256sum <"$dir/mixed.img")
	# Remove both tools' targets and snapshots of vgsrc/big (untimed).
	clean_big() {
		lvremove -q -y --select 'vg_name=vgsrc && origin=big' >/dev/null 2>&1 || true
		rsh "lvremove -q -y --select 'vg_name=vgdst && lv_name=~^big' >/dev/null 2>&1 || true"
	}
fi
if has full; then
	echo "== full: a fresh thin LV vgsrc/big, $fullmib MiB (half random, half /usr/bin and /usr/lib), $reps rounds"
	tbf_ms=() tbf_wire=() tsrf_ms=() tsrf_wire=()
	full_tb() {
		uses thinback || return 0
		tb "full-$1" vgsrc/big "ssh://$host/vgdst/big" --create
		tbf_ms+=("$last_ms") tbf_wire+=("$last_wire")
		line+="thinback $last_ms ms, $last_wire bytes ($(phases "$dir/full-$1.json"))"
		if [ "$1" = 1 ]; then [ "$(sha256sum </dev/vgdst/big)" = "$want" ] || fail "vgdst/big differs from vgsrc/big"; fi
	}
	full_tsr() {
		uses tsr || return 0
		tsr_timed "tsrfull-$1" "lvcreate -q -s -K -n bigsnap vgsrc/big >/dev/null 2>&1 &&
			thin_send vgsrc/bigsnap | zstd -q -1 -T0 |
			$RSH $host 'lvcreate -q -V ${fullmib}M -T vgdst/pool -n big2 >/dev/null 2>&1 &&
				zstd -q -d | thin_recv vgdst/big2 && lvcreate -q -s -n big2.r vgdst/big2 >/dev/null 2>&1'"
		tsrf_ms+=("$last_ms") tsrf_wire+=("$last_wire")
		line+="tsr $last_ms ms, $last_wire bytes"
		if [ "$1" = 1 ]; then [ "$(sha256sum </dev/vgdst/big2)" = "$want" ] || fail "vgdst/big2 differs from vgsrc/big"; fi
	}
	i=1
	while [ $i -le "$reps" ]; do
		clean_big
		line="round $i: "
		if [ $((i % 2)) = 1 ]; then
			full_tb $i
			line+="; "
			full_tsr $i
		else
			full_tsr $i
			line+="; "
			full_tb $i
		fi
		echo "$line"
		i=$((i + 1))
	done
	uses thinback && echo "median: thinback $(median "${tbf_ms[@]}") ms, $(median "${tbf_wire[@]}") bytes"
	uses tsr && echo "median: tsr $(median "${tsrf_ms[@]}") ms, $(median "${tsrf_wire[@]}") bytes"
	uses thinback && uses tsr && ratio "$(median "${tbf_ms[@]}")" "$(median "${tsrf_ms[@]}")"
	echo "the replicas equal the source (sha256, round 1)"
fi

if has resume && uses thinback; then
	clean_big
	# Half of a full's bytes on the wire: part 2's median, else the
	# size of the data compressed as zstd -1 would.
	if [ "${#tbf_wire[@]}" -gt 0 ] 2>/dev/null; then
		whole=$(median "${tbf_wire[@]}")
	else
		whole=$(zstd -q -1 -T0 -c <"$dir/mixed.img" | wc -c)
	fi
	cargs=()
	[ -z "$ckpt" ] || cargs=(--checkpoint-mib "$ckpt")
	echo "== resume: the ssh client of a full replicate of vgsrc/big killed after $((whole / 2)) of ~$whole bytes on the wire${ckpt:+ (--checkpoint-mib $ckpt)}"
	w0=$(wire)
	t0=$(now)
	thinback replicate vgsrc/big "ssh://$host/vgdst/big" --create "${cargs[@]}" --rsh "$RSH" --json >"$dir/cut.json" 2>"$dir/cut.err" &
	pid=$!
	while [ $(($(wire) - w0)) -lt $((whole / 2)) ] && kill -0 $pid 2>/dev/null; do
		sleep 0.05
	done
	sshpid=$(pgrep -P $pid -x ssh) || fail "no ssh client under thinback replicate (pid $pid): $(cat "$dir/cut.err")"
	kill -KILL "$sshpid"
	rc=0
	wait $pid || rc=$?
	t1=$(now)
	w1=$(wire)
	[ $rc != 0 ] || fail "thinback replicate ended well although its ssh client was killed"
	echo "cut run: exit $rc after $(ms "$t0" "$t1") ms, $((w1 - w0)) bytes on the wire; $(tail -n1 "$dir/cut.err")"
	tb resumed vgsrc/big "ssh://$host/vgdst/big" --create "${cargs[@]}"
	echo "resumed run: $last_ms ms, $last_wire bytes on the wire ($(phases "$dir/resumed.json"))"
	echo "the remainder (a whole full's ~$whole bytes less the cut run's $((w1 - w0))): $((whole - w1 + w0)) bytes; the resumed run sent $((last_wire - whole + w1 - w0)) bytes more"
	[ "$(sha256sum </dev/vgdst/big)" = "$want" ] || fail "vgdst/big differs from vgsrc/big after the resume"
	echo "the replica equals the source (sha256)"
fi
GUEST
chmod 755 "$work/guest.sh"

echo "thin-send-recv $("$tsr" --version 2>&1 | head -n1), $(thin_delta --version 2>&1 | head -n1) (thin-provisioning-tools), $(go version | cut -d' ' -f3), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
flock /tmp/thinback-guest.lock scripts/uml/run --mem 1536M --workdir "$work" --timeout 3600 -- "$work/guest.sh" "$reps" "$mib" "$fullmib" "$volsize" "$parts" "$tools" "$ckpt"
