#!/bin/bash
# bench-smallbackup.sh: the fixed cost of a small backup of a thin LV, side
# by side with LINBIT's thin-send-recv, in a User-Mode Linux guest on one
# real LVM thin pool.
#
# A 16 GiB thin LV with 2 GiB written gets a first thinback backup (a full)
# and a first thin-send-recv base snapshot. Then, REPS times: CHANGE_MIB MiB
# of random 64 KiB writes, then (order alternating) the same change backed
# up both ways:
#   thinback   thinback backup VG/LV --store DIR --json (snapshot, metadata
#              snapshot, native discovery, send, fsync, catalog, rotation of
#              the old snapshot, deactivation)
#              (THINBACK_DM=dmsetup in the environment: its device-mapper
#              questions through dmsetup processes instead of ioctls)
#   tsr        lvcreate -s (the new snapshot), then
#              thin_send OLD NEW | zstd -1 -T0 > FILE
#              (the old snapshot's lvremove follows, untimed)
# and finally both once more with nothing changed. The store and the tsr
# files are on the work dir (the host's disk) alike. A last round, untimed,
# runs both through wrappers that log every LVM, dmsetup and thin tool
# command, and prints how many of each were run.
#
# Usage: THIN_SEND_RECV=PATH scripts/bench-smallbackup.sh
#   THIN_SEND_RECV: a thin_send_recv binary built from
#        https://github.com/LINBIT/thin-send-recv (make EXTRA_CFLAGS=-O2;
#        needs flex)
#   env: REPS=5 CHANGE_MIB=10
# Needs root, user-mode-linux, lvm2, thin-provisioning-tools, zstd and Go.
# The guest runs under flock /tmp/thinback-guest.lock.
set -euo pipefail

reps=${REPS:-5}
mib=${CHANGE_MIB:-10}
tsr=${THIN_SEND_RECV:-}
cd "$(dirname "$0")/.."
if [ -z "$tsr" ] || [ ! -x "$tsr" ]; then
	echo "bench-smallbackup: set THIN_SEND_RECV to thin-send-recv's thin_send_recv binary" >&2
	exit 1
fi
for p in zstd linux.uml; do
	command -v "$p" >/dev/null || { echo "bench-smallbackup: $p not found" >&2; exit 1; }
done
work=$(mktemp -d /var/tmp/thinback-bench-small.XXXXXX)
trap 'rm -rf "$work"' EXIT
go build -o "$work/thinback" ./cmd/thinback
cp "$tsr" "$work/thin_send_recv"
ln -s thin_send_recv "$work/thin_send"

cat >"$work/guest.sh" <<'GUEST'
#!/bin/bash
set -euo pipefail
reps=$1 mib=$2
dir=$(dirname "$0")
tb=$dir/thinback ts=$dir/thin_send store=$dir/store
export THINBACK_STATE=$dir/state.db
now() { date +%s%N; }
ms() { echo $(( ($2 - $1) / 1000000 )); }
change() { # $1 MiB of random 64 KiB writes into the written 2 GiB
	local i=0
	while [ $i -lt $(( $1 * 16 )) ]; do
		dd if=/dev/urandom of=/dev/vgsb/vol bs=64k count=1 seek=$(( $(od -An -N4 -tu4 /dev/urandom) % 32768 )) \
			oflag=direct conv=notrunc status=none
		i=$((i + 1))
	done
}
field() { grep -o "\"$1\":[^,}]*" "$dir/tb.json" | cut -d: -f2; }
thinback_round() {
	local t0 t1
	t0=$(now)
	"$tb" backup vgsb/vol --store "$store" --json >"$dir/tb.json"
	t1=$(now)
	echo "thinback $(ms "$t0" "$t1") ms (its LVM commands $(field lvm_commands), dmsetup $(field dmsetup_commands), dm ioctls $(field dm_ioctls), in $(field lvm_seconds) s; metadata snapshot held $(field metadata_snap_held_seconds) s; data $(field data_bytes) bytes)"
}
tsr_round() {
	local t0 t1
	t0=$(now)
	lvcreate -q -s -n "tsr$1" vgsb/vol >/dev/null 2>&1
	"$ts" "vgsb/tsr$(($1 - 1))" "vgsb/tsr$1" | zstd -q -1 -T0 >"$dir/tsr.zst"
	t1=$(now)
	echo "tsr $(ms "$t0" "$t1") ms ($(stat -c %s "$dir/tsr.zst") bytes)"
	lvremove -q -y "vgsb/tsr$(($1 - 1))" >/dev/null
}
one() { # round $1: thinback first on odd rounds, tsr first on even ones
	if [ $(($1 % 2)) = 1 ]; then
		echo "round $1: $(thinback_round); $(tsr_round "$1")"
	else
		echo "round $1: $(tsr_round "$1"); $(thinback_round)"
	fi
}

mkpool -s 8G -p 6G vgsb >/dev/null 2>&1
lvcreate -q -V 16G -T vgsb/pool -n vol >/dev/null 2>&1
dd if=/dev/urandom of=/dev/vgsb/vol bs=4M count=512 oflag=direct status=none
"$tb" backup vgsb/vol --store "$store" --quiet
lvcreate -q -s -n tsr0 vgsb/vol >/dev/null 2>&1
echo "== $mib MiB changed (random 64 KiB writes), $reps rounds"
i=1
while [ $i -le "$reps" ]; do
	change "$mib"
	one $i
	i=$((i + 1))
done
echo "== nothing changed"
one $i
i=$((i + 1))

echo "== commands of one $mib MiB round (through logging wrappers, untimed)"
mkdir "$dir/wrap"
for p in lvs lvcreate lvchange lvremove dmsetup thin_delta thin_dump; do
	real=$(command -v $p)
	printf '#!/bin/sh\necho %s >>"$CMDLOG"\nexec %s "$@"\n' "$p" "$real" >"$dir/wrap/$p"
	chmod 755 "$dir/wrap/$p"
done
change "$mib"
export CMDLOG=$dir/tb.log
PATH=$dir/wrap:$PATH "$tb" backup vgsb/vol --store "$store" --quiet
echo "thinback backup: $(wc -l <"$CMDLOG") commands: $(sort "$CMDLOG" | uniq -c | awk '{printf "%s %s×%s", (NR > 1 ? "," : ""), $2, $1}')"
export CMDLOG=$dir/tsr.log
PATH=$dir/wrap:$PATH lvcreate -q -s -n "tsr$i" vgsb/vol >/dev/null 2>&1
PATH=$dir/wrap:$PATH "$ts" "vgsb/tsr$((i - 1))" "vgsb/tsr$i" | zstd -q -1 -T0 >"$dir/tsr.zst"
echo "lvcreate + thin_send: $(wc -l <"$CMDLOG") commands: $(sort "$CMDLOG" | uniq -c | awk '{printf "%s %s×%s", (NR > 1 ? "," : ""), $2, $1}')"
vgremove -q -f vgsb >/dev/null 2>&1
GUEST
chmod 755 "$work/guest.sh"

echo "thin-send-recv $("$tsr" --version 2>&1 | head -n1), $(thin_delta --version 2>&1 | head -n1) (thin-provisioning-tools), $(go version | cut -d' ' -f3), $(nproc) CPUs"
flock /tmp/thinback-guest.lock scripts/uml/run --mem 1536M --workdir "$work" --timeout 3600 -- "$work/guest.sh" "$reps" "$mib"
