#!/usr/bin/env bash
# Side-by-side benchmarks of reading a point in time without restoring it
# (see BENCHMARKS.md), on one image backed up as a full and an incremental:
#  1. sequential read of a mounted point in time (dd bs=1M from the FUSE
#     file, cold: a fresh open, the page cache dropped) against thinback
#     restore of the same point to a file, and thinback cat of it;
#  2. random 4 KiB reads of the mounted image (O_DIRECT), the first read
#     of each place cold, the rest warm (the mount's cache of records);
#  3. thinback verify --device of the restored image against cat of it to
#     /dev/null (goal: at least 90 %) and sha256sum of it.
#
#   scripts/bench-mount.sh [WORKDIR]        (root, FUSE; SIZE=1G by default,
#                                            needs about 4×SIZE free)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-mount.sh: needs root (FUSE mount, dropping caches)" >&2; exit 1; }
W=${1:-$(mktemp -d /tmp/thinback-bench-mount.XXXXXX)}
SIZE=${SIZE:-1G}
mkdir -p "$W"
go build -o "$W/thinback" ./cmd/thinback
go build -o "$W/randread" ./scripts/randread
TB="$W/thinback"
IMG="$W/vol.img"
MNT="$W/mnt"
export THINBACK_STORE="$W/store" THINBACK_STATE="$W/state.db"

drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
best() { # best of three, each with cold caches
	local t bt=999999
	for _ in 1 2 3; do
		drop
		/usr/bin/time -o "$W/time.out" -f '%e' "$@" >/dev/null 2>&1
		read -r t < "$W/time.out"
		if awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a<b)}'; then bt=$t; fi
	done
	echo "$bt"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", b/s/1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.0f", 100*b/a }'; }

# The image: half random data, a quarter text, a quarter zeroes; then an
# incremental that rewrites a tenth of it.
rm -rf "$W/store" "$W/state.db" "$IMG" "$W"/r.img "$W"/c.img
truncate -s "$SIZE" "$IMG"
bytes=$(stat -c %s "$IMG")
mib=$((bytes / 1048576))
head -c $((bytes / 2)) /dev/urandom | dd of="$IMG" conv=notrunc status=none
find /usr/share -type f -size -1M 2>/dev/null | head -20000 | xargs cat 2>/dev/null | head -c $((bytes / 4)) |
	dd of="$IMG" bs=1M seek=$((mib / 2)) conv=notrunc status=none
"$TB" backup --quiet --file "$IMG" --volume vol
dd if=/dev/urandom of="$IMG" bs=1M count=$((mib / 10)) seek=$((mib / 3)) conv=notrunc status=none
"$TB" backup --quiet --file "$IMG" --volume vol
echo "volume $SIZE ($bytes bytes); store $(du -sb "$W/store" | cut -f1) bytes; $(nproc) CPUs"

mkdir -p "$MNT"
"$TB" mount --quiet "$MNT" & mpid=$!
trap 'umount "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null; kill $mpid 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -e "$MNT/vol/latest.img" ] && break; sleep 0.1; done
FUSE="$MNT/vol/latest.img"

echo
echo "1. the newest point in time, front to back (cold caches, best of 3)"
t_dd=$(best dd if="$FUSE" of=/dev/null bs=1M)
t_restore=$(best sh -c "rm -f '$W/r.img' '$W/state.db'; '$TB' restore vol --quiet --to '$W/r.img'")
t_cat=$(best sh -c "'$TB' cat vol --quiet > /dev/null")
cmp "$FUSE" "$IMG"
cmp "$W/r.img" "$IMG"
printf "  %-52s %7ss %6s MiB/s\n" "dd if=MOUNT/vol/latest.img of=/dev/null bs=1M" "$t_dd" "$(rate "$bytes" "$t_dd")"
printf "  %-52s %7ss %6s MiB/s\n" "thinback restore vol --to FILE (fsync included)" "$t_restore" "$(rate "$bytes" "$t_restore")"
printf "  %-52s %7ss %6s MiB/s\n" "thinback cat vol > /dev/null" "$t_cat" "$(rate "$bytes" "$t_cat")"
echo "  => reading the mount takes $(pct "$t_restore" "$t_dd")% of the restore's time"

echo
echo "2. random 4 KiB reads of the mounted image (O_DIRECT; 32 places, 2000 reads)"
drop
"$W/randread" "$FUSE" 2000 32 1 | sed 's/^/  /'
drop
"$W/randread" "$FUSE" 2000 2000 2 | sed 's/^/  (2000 places) /'

echo
echo "3. proving a restored image equal to the snapshot (cold caches, best of 3)"
t_cp=$(best cat "$W/r.img")
t_ver=$(best "$TB" verify vol --quiet --snapshot 2 --device "$W/r.img")
t_sha=$(best sha256sum "$W/r.img")
printf "  %-52s %7ss %6s MiB/s\n" "cat IMAGE > /dev/null" "$t_cp" "$(rate "$bytes" "$t_cp")"
printf "  %-52s %7ss %6s MiB/s\n" "thinback verify vol --snapshot 2 --device IMAGE" "$t_ver" "$(rate "$bytes" "$t_ver")"
printf "  %-52s %7ss %6s MiB/s\n" "sha256sum IMAGE" "$t_sha" "$(rate "$bytes" "$t_sha")"
echo "  => verify --device runs at $(pct "$t_ver" "$t_cp")% of cat's throughput (goal: >= 90%), $(pct "$t_ver" "$t_sha")% of sha256sum's"
echo "  (the image is a sparse file: cat and sha256sum read its holes, verify --device skips them)"
