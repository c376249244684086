#!/bin/bash
# bench-thinmeta.sh: thinback's native thin metadata reader against
# thin_delta and thin_dump, side by side in one run, on kernel-style shared
# metadata at scale.
#
# thin_restore builds one thin device of MAPPINGS mappings on the host; in a
# User-Mode Linux guest the real kernel makes device 2 a snapshot of it and
# writes to device 1, so the two share every untouched subtree exactly as
# the kernel makes them; then it holds a metadata snapshot and stops the
# pool. The pool's data device is dm-zero (writes vanish, reads are zero):
# only the metadata matters here. On the host, the metadata file is attached
# read-only to a loop device, and discbench times (median of REPS runs,
# alternating) thin_delta -m --snap1 2 --snap2 1 against the native
# discovery of the same delta (lvmthin.Discover: reader, extent building,
# spool), and thin_dump -m --dev-id 1 against the native full, each in a
# child process: wall time, peak RSS, block input; the native side also
# reports the metadata it read. Both read the loop device with O_DIRECT.
# Each case is measured warm (the loop device reads the file through the
# host's page cache, which holds it after the first run) and cold (the
# loop device attached with direct I/O: every read reaches the disk).
#
# Cases (the fraction of device 1's blocks written after the snapshot):
#   a  0.01 % at random (one 4 KiB write into each chosen block)
#   b  0.1 % at random
#   c  1 % at random
#   d  1 % in clustered runs of 1 to 16 MiB
#   send  not a metadata file: in the guest, on a real LVM pool, the whole
#      `thinback send --base` of a small incremental (10 MiB of random
#      writes to a 2 GiB-written thin LV), with each discovery, alternating:
#      total time and the metadata snapshot's hold time
#
# Usage: scripts/bench-thinmeta.sh [CASE...]      (default: a b c d send)
#   env: MAPPINGS=33554432 (32 Mi: a 2 TiB volume at 64 KiB blocks)
#        BLOCK_SECTORS=128 REPS=3 SEED=1 CACHE="warm cold"
#        WORK=DIR (keeps the images there for reruns; default a temporary
#        directory under /var/tmp, removed at the end)
# Needs root (loop devices, the guest), user-mode-linux, thin-provisioning-
# tools and Go. The guest runs under flock /tmp/thinback-guest.lock.
set -euo pipefail

mappings=${MAPPINGS:-33554432}
sectors=${BLOCK_SECTORS:-128}
reps=${REPS:-3}
seed=${SEED:-1}
cases=${*:-a b c d send}
caches=${CACHE:-warm cold}
cd "$(dirname "$0")/.."
for p in thin_restore thin_delta thin_dump losetup linux.uml; do
	command -v "$p" >/dev/null || { echo "bench-thinmeta: $p not found" >&2; exit 1; }
done
if [ -n "${WORK:-}" ]; then
	work=$WORK
	mkdir -p "$work"
else
	work=$(mktemp -d /var/tmp/thinback-bench-thinmeta.XXXXXX)
	trap 'rm -rf "$work"' EXIT
fi
go build -o "$work/discbench" ./lvmthin/internal/discbench
bytes=$((sectors * 512))

base=$work/base-$mappings-$sectors.bin
need_base=false
for c in $cases; do
	[ "$c" = send ] || need_base=true
done
if $need_base && [ ! -f "$base" ]; then
	datablocks=$("$work/discbench" gen1 -mappings "$mappings" -block-sectors "$sectors" -o "$work/pool.xml")
	# Room for thin_restore's tree and space maps, and for the nodes the
	# kernel copies while writing (sparse).
	truncate -s $((mappings * 96 + (256 << 20))) "$base.tmp"
	start=$(date +%s.%N)
	thin_restore -i "$work/pool.xml" -o "$base.tmp"
	echo "thin_restore of $mappings mappings: $(echo "$(date +%s.%N) - $start" | bc) s, $(du -h "$base.tmp" | cut -f1) used"
	echo "$datablocks" >"$base.datablocks"
	mv "$base.tmp" "$base"
	rm -f "$work/pool.xml"
fi
datablocks=$(cat "$base.datablocks" 2>/dev/null || echo 0)

cat >"$work/guest.sh" <<'GUEST'
#!/bin/sh
# In the guest: a pool on the metadata file (loop) and dm-zero data, device
# 2 a snapshot of device 1, writes to device 1, a held metadata snapshot.
set -eu
meta=$1 blocks=$2 sectors=$3 datablocks=$4
shift 4
mloop=$(losetup -f --show "$meta")
dmsetup create tbzero --table "0 $((datablocks * sectors)) zero"
dmsetup mknodes
zero=$(dmsetup info -c --noheadings -o major,minor tbzero)
dmsetup create tbpool --table "0 $((datablocks * sectors)) thin-pool $mloop $zero $sectors 0 1 skip_block_zeroing"
dmsetup message tbpool 0 "create_snap 2 1"
pool=$(dmsetup info -c --noheadings -o major,minor tbpool)
dmsetup create tbthin --table "0 $((blocks * sectors)) thin $pool 1"
dmsetup mknodes
"$(dirname "$0")/discbench" write -dev /dev/mapper/tbthin -blocks "$blocks" -block-bytes $((sectors * 512)) "$@"
dmsetup message tbpool 0 reserve_metadata_snap
dmsetup status tbpool
dmsetup remove tbthin
dmsetup remove tbpool
dmsetup remove tbzero
losetup -d "$mloop"
GUEST
chmod 755 "$work/guest.sh"

echo "tools: $(thin_delta --version 2>&1 | head -n1) (thin-provisioning-tools), $(go version | cut -d' ' -f3), $(nproc) CPUs"
echo "$mappings mappings of $((bytes >> 10)) KiB per device ($(( mappings * bytes >> 30 )) GiB volume), seed $seed"
cat >"$work/send.sh" <<'GUEST'
#!/bin/sh
# In the guest: a whole send of a small incremental, with each discovery.
set -eu
reps=$1
dir=$(dirname "$0")
tb=$dir/thinback
mkpool -s 6G -p 4G vgsend >/dev/null 2>&1
lvcreate -q -V 16G -T vgsend/pool -n vol >/dev/null 2>&1
dd if=/dev/urandom of=/dev/vgsend/vol bs=4M count=512 oflag=direct status=none
lvcreate -q -s -n s1 vgsend/vol >/dev/null 2>&1
i=0
while [ $i -lt 160 ]; do # 160 random 64 KiB writes in the written 2 GiB
	dd if=/dev/urandom of=/dev/vgsend/vol bs=64k count=1 seek=$(( $(od -An -N4 -tu4 /dev/urandom) % 32768 )) oflag=direct conv=notrunc status=none
	i=$((i + 1))
done
lvcreate -q -s -n s2 vgsend/vol >/dev/null 2>&1
n=0
while [ $n -lt "$reps" ]; do
	for d in native tools; do
		start=$(date +%s%N)
		"$tb" send vgsend/s2 --base vgsend/s1 --discovery $d -o - 2>"$dir/err" >/dev/null
		end=$(date +%s%N)
		echo "$d: total $(( (end - start) / 1000000 )) ms; $(grep -o '([^)]*metadata snapshot held[^)]*)' "$dir/err")"
	done
	n=$((n + 1))
done
vgremove -q -f vgsend >/dev/null 2>&1
GUEST
chmod 755 "$work/send.sh"

for c in $cases; do
	if [ "$c" = send ]; then
		go build -o "$work/thinback" ./cmd/thinback
		echo "== send: a whole incremental send in the guest (10 MiB changed of a 16 GiB thin LV with 2 GiB written)"
		flock /tmp/thinback-guest.lock scripts/uml/run --workdir "$work" --timeout 1800 -- "$work/send.sh" "$reps"
		continue
	fi
	case $c in
	a) args="-fraction 0.0001" ;;
	b) args="-fraction 0.001" ;;
	c) args="-fraction 0.01" ;;
	d) args="-fraction 0.01 -clustered" ;;
	*) echo "bench-thinmeta: unknown case $c (a, b, c, d or send)" >&2; exit 2 ;;
	esac
	img=$work/case-$c-$mappings-$sectors-$seed.bin
	if [ ! -f "$img" ]; then
		cp --sparse=always "$base" "$img.tmp"
		start=$(date +%s.%N)
		flock /tmp/thinback-guest.lock scripts/uml/run --workdir "$work" --timeout 3600 -- \
			"$work/guest.sh" "$img.tmp" "$mappings" "$sectors" "$datablocks" $args -seed "$seed"
		echo "case $c: guest $(echo "$(date +%s.%N) - $start" | bc) s"
		mv "$img.tmp" "$img"
	fi
	for cache in $caches; do
		echo "== case $c ($cache): $args"
		"$work/discbench" shared -meta "$img" -blocks "$mappings" -block-bytes "$bytes" -reps "$reps" \
			$([ "$cache" = cold ] && echo -cold)
	done
done
