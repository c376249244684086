#!/bin/bash
# bench-classic.sh: classic (thick) LVM snapshots in a real kernel.
#
# In a User-Mode Linux guest (scripts/uml/run), on a thick LV of SIZE over a
# loop device:
#   1. the origin's write throughput (dd oflag=direct, MB MiB) with no
#      snapshot, with a fresh live snapshot (every chunk's first write is a
#      copy-on-write), and again over the chunks already copied;
#   2. after WRITES scattered 4 KiB writes between two snapshots S0 and S1:
#      an incremental of S1 from S0's exception table (classicbench: bytes
#      read, table read time) against a full read of S1 (classicbench with
#      no base: every byte, as a backup that compares digests reads) and a
#      plain dd of S1, side by side, REPS times alternating.
# Needs root, user-mode-linux, lvm2, Go and a C compiler (see scripts/uml).
#
# Usage: scripts/bench-classic.sh   (env: SIZE=4G WRITES=10000 MB=512 REPS=3 MEM=2G)
set -euo pipefail

size=${SIZE:-4G}
writes=${WRITES:-10000}
mb=${MB:-512}
reps=${REPS:-3}
mem=${MEM:-2G}
cd "$(dirname "$0")/.."

dir=$(mktemp -d "${TMPDIR:-/tmp}/thinback-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/classicbench" ./lvmthin/internal/classicbench

cat >"$dir/guest.sh" <<'GUEST'
#!/bin/bash
set -euo pipefail
: "${SIZE:?}" "${WRITES:?}" "${MB:?}" "${REPS:?}"
w=$THINBACK_UML_WORK
vg=tb-bench
img=$w/$vg.img
truncate -s $(( $(numfmt --from=iec "$SIZE") * 2 + (1 << 30) )) "$img"
loop=$(losetup -f --show "$img")
cleanup() { vgremove -f -y $vg >/dev/null 2>&1 || true; losetup -d "$loop" || true; rm -f "$img"; }
trap cleanup EXIT
pvcreate -q "$loop" >/dev/null; vgcreate -q $vg "$loop" >/dev/null
lvcreate -q -Wy -Zy -L "$SIZE" -n vol $vg >/dev/null
dev=/dev/$vg/vol
bytes=$(blockdev --getsize64 $dev)
echo "guest: $(uname -r), $(nproc) CPU, volume $SIZE, lvm $(lvm version | sed -n 's/.*LVM version: *\([^ ]*\).*/\1/p')"
echo "filling the volume with random data"
dd if=/dev/urandom of=$dev bs=4M count=$(( bytes >> 22 )) oflag=direct status=none

rate() { # dd's own figure for writing MB MiB at offset 0
	dd if=/dev/zero of=$dev bs=1M count="$MB" oflag=direct conv=notrunc 2>&1 | tail -n1 | sed 's/.*, //'
}
echo "== origin write throughput, dd bs=1M oflag=direct, $MB MiB"
for r in $(seq "$REPS"); do
	echo "no snapshot:                 $(rate)"
	lvcreate -q -s -L $(( MB + 64 ))M -n tp $vg/vol >/dev/null
	echo "live snapshot, first writes: $(rate)"
	echo "live snapshot, rewrites:     $(rate)"
	lvremove -q -y $vg/tp >/dev/null
done

echo "== incremental after $WRITES scattered 4 KiB writes vs whole-volume reads"
cow=$(( (WRITES * 4096 >> 20) + 64 ))M
lvcreate -q -s -L "$cow" -pr -n s0 $vg/vol >/dev/null
python3 - "$dev" "$bytes" "$WRITES" <<'PY'
import mmap, os, random, sys
dev, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
buf.write(os.urandom(4096))
r = random.Random(1)
for _ in range(n):
    os.pwritev(fd, [buf], r.randrange(size // 4096) * 4096)
os.close(fd)
PY
sleep 1 # lv_time has whole seconds; S1 must be younger than S0
lvcreate -q -s -L 64M -pr -n s1 $vg/vol >/dev/null
for r in $(seq "$REPS"); do
	"$w/classicbench" -snap $vg/s1 -base $vg/s0
	"$w/classicbench" -snap $vg/s1
	start=$(date +%s.%N)
	dd if=/dev/$vg/s1 of=/dev/null bs=4M iflag=direct status=none
	echo "dd of the whole snapshot: $(echo "$bytes / 1000000 / ($(date +%s.%N) - $start)" | bc) MB/s"
done
GUEST
chmod +x "$dir/guest.sh"
echo "host: $(go version | cut -d' ' -f3), $(nproc) CPUs; SIZE=$size WRITES=$writes MB=$mb REPS=$reps"
scripts/uml/run --workdir "$dir" --mem "$mem" --timeout 3600 \
	--env SIZE="$size" --env WRITES="$writes" --env MB="$mb" --env REPS="$reps" -- "$dir/guest.sh"
