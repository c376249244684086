#!/usr/bin/env bash
# Side-by-side benchmark of thinback send/apply/inspect against cat, zstd
# and dd on the same realistic image, in one run (see BENCHMARKS.md).
#
#   scripts/bench-file.sh [WORKDIR]     (needs ~8 GB free; root for the
#                                        page-cache drop is not required)
#
# The image: a 1.5 GiB ext4 filesystem made with mkfs.ext4 -d from /usr/share,
# /usr/bin and the Go sources, plus a 128 MiB run of random data; its free
# space is the zero holes. Every command runs 3 times; the best time is
# kept. Inputs are in the page cache (read once first), so the figures
# compare CPU work, not this machine's disk.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-$(mktemp -d /tmp/thinback-bench.XXXXXX)}
mkdir -p "$W"
go build -o "$W/thinback" ./cmd/thinback
TB="$W/thinback"
IMG="$W/disk.img"
export THINBACK_STATE="$W/state.db"

if [ ! -s "$IMG" ]; then
	stage="$W/stage"
	mkdir -p "$stage"
	cp -a /usr/share /usr/bin "$stage/"
	if [ -d /usr/local/go/src ]; then cp -a /usr/local/go/src "$stage/gosrc"; fi
	truncate -s 1536M "$IMG"
	mkfs.ext4 -q -F -d "$stage" "$IMG"
	rm -rf "$stage"
	dd if=/dev/urandom of="$IMG" bs=1M count=128 seek=1300 conv=notrunc status=none
fi
size=$(stat -c %s "$IMG")

# best TIME_SECONDS MAXRSS_KB of 3 runs of "$@" (stdout to /dev/null)
best() {
	local t m bt=999999 bm=0
	for _ in 1 2 3; do
		/usr/bin/time -o "$W/time.out" -f '%e %M' "$@" >/dev/null 2>&1
		read -r t m < "$W/time.out"
		if awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a<b)}'; then bt=$t; fi
		if [ "$m" -gt "$bm" ]; then bm=$m; fi
	done
	echo "$bt $bm"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", b/s/1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.0f", 100*b/a }'; }

cat "$IMG" >/dev/null
echo "image: $size bytes ($(du -k "$IMG" | cut -f1) KiB allocated), $(nproc) CPUs"
echo

# --- send ----------------------------------------------------------------
read -r t_cat _ < <(best sh -c "cat '$IMG'")
read -r t_zstd _ < <(best sh -c "zstd -q -1 -T0 < '$IMG'")
read -r t_send m_send < <(best sh -c "'$TB' send --quiet --file '$IMG' -o -")
zsize=$(zstd -q -1 -T0 < "$IMG" | wc -c)
rm -f "$W/full.tbk"
"$TB" send --quiet --file "$IMG" -o "$W/full.tbk"
tsize=$(stat -c %s "$W/full.tbk")
slow=$t_cat; if awk -v a="$t_zstd" -v b="$t_cat" 'BEGIN{exit !(a>b)}'; then slow=$t_zstd; fi
echo "send (full of the image, output to a pipe)"
printf "  %-34s %6ss %6s MiB/s\n" "cat IMG" "$t_cat" "$(rate "$size" "$t_cat")"
printf "  %-34s %6ss %6s MiB/s  %s bytes\n" "zstd -1 -T0 <IMG" "$t_zstd" "$(rate "$size" "$t_zstd")" "$zsize"
printf "  %-34s %6ss %6s MiB/s  %s bytes, peak RSS %s MiB\n" "thinback send --file IMG -o -" "$t_send" "$(rate "$size" "$t_send")" "$tsize" "$((m_send/1024))"
echo "  => throughput $(pct "$t_send" "$slow")% of the slower reference; size $(pct "$zsize" "$tsize")% of zstd -1's"
echo

# --- apply ---------------------------------------------------------------
zstd -q -1 -T0 -f < "$IMG" > "$W/disk.img.zst"
rm -f "$W/t1" "$W/t2"
read -r t_dd _ < <(best sh -c "rm -f '$W/t1'; zstd -q -d -T0 < '$W/disk.img.zst' | dd of='$W/t1' bs=4M conv=fsync status=none")
read -r t_apply m_apply < <(best sh -c "rm -f '$W/t2' '$W/state.db'; '$TB' apply --quiet '$W/full.tbk' --to '$W/t2'")
cmp "$IMG" "$W/t2"
echo "apply (the full onto a new file on disk, fsync included)"
printf "  %-34s %6ss %6s MiB/s\n" "zstd -d -T0 | dd bs=4M conv=fsync" "$t_dd" "$(rate "$size" "$t_dd")"
printf "  %-34s %6ss %6s MiB/s  peak RSS %s MiB\n" "thinback apply FULL --to FILE" "$t_apply" "$(rate "$size" "$t_apply")" "$((m_apply/1024))"
echo "  => $(pct "$t_apply" "$t_dd")% of the reference's throughput (cmp: equal)"
echo

# --- inspect -------------------------------------------------------------
data=$("$TB" inspect --json "$W/full.tbk" | awk -F': ' '/"data_bytes"/{gsub(/,/,"",$2); print $2}')
read -r t_insp1 _ < <(best taskset -c 0 "$TB" inspect "$W/full.tbk")
read -r t_insp _ < <(best "$TB" inspect "$W/full.tbk")
echo "inspect (decompress and verify every block; $data bytes of DATA)"
printf "  %-34s %6ss %6s MiB/s of DATA\n" "taskset -c 0 thinback inspect" "$t_insp1" "$(rate "$data" "$t_insp1")"
printf "  %-34s %6ss %6s MiB/s of DATA\n" "thinback inspect (all CPUs)" "$t_insp" "$(rate "$data" "$t_insp")"
echo

# --- memory on a large sparse image -------------------------------------
SP="$W/sparse16g.img"
rm -f "$SP" "$W/sparse.tbk" "$W/t3"
truncate -s 16G "$SP"
for off in 0 4000 9000 16000; do dd if="$IMG" of="$SP" bs=1M count=256 skip=$((off % 1200)) seek="$off" conv=notrunc status=none; done
read -r t_ss m_ss < <(best sh -c "'$TB' send --quiet --file '$SP' -o -")
"$TB" send --quiet --file "$SP" -o "$W/sparse.tbk"
read -r t_sa m_sa < <(best sh -c "rm -f '$W/t3' '$W/state.db'; '$TB' apply --quiet '$W/sparse.tbk' --to '$W/t3'")
cmp "$SP" "$W/t3"
echo "16 GiB sparse image with 1 GiB of data"
printf "  %-34s %6ss  peak RSS %s MiB\n" "thinback send --file SPARSE -o -" "$t_ss" "$((m_ss/1024))"
printf "  %-34s %6ss  peak RSS %s MiB (cmp: equal)\n" "thinback apply SPARSE.tbk --to FILE" "$t_sa" "$((m_sa/1024))"
rm -f "$SP" "$W/t1" "$W/t2" "$W/t3"
