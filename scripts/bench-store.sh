#!/usr/bin/env bash
# Side-by-side benchmarks of the store (see BENCHMARKS.md):
#  1. restore of a full + 20 incrementals that rewrite the same hot region,
#     against applying one full of the same final image (each block once);
#  2. thinback verify of the store against cat of its files, with the
#     files in the page cache and with cold caches (needs root to drop them);
#  3. prune of an incremental against the volume's size (a Go benchmark).
#
#   scripts/bench-store.sh [WORKDIR]      (needs ~6 GB free)
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-$(mktemp -d /tmp/thinback-bench-store.XXXXXX)}
mkdir -p "$W"
go build -o "$W/thinback" ./cmd/thinback
TB="$W/thinback"
IMG="$W/vol.img"
export THINBACK_STORE="$W/store" THINBACK_STATE="$W/state.db"

best() {
	local t bt=999999
	for _ in 1 2 3; do
		if [ -n "${COLD:-}" ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
		/usr/bin/time -o "$W/time.out" -f '%e' "$@" >/dev/null 2>&1
		read -r t < "$W/time.out"
		if awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a<b)}'; then bt=$t; fi
	done
	echo "$bt"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", b/s/1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.0f", 100*b/a }'; }

# A 1 GiB image: 512 MiB of mixed data (random and text), the rest zeroes.
rm -rf "$W/store" "$W/state.db" "$IMG"
truncate -s 1G "$IMG"
head -c 256M /dev/urandom | dd of="$IMG" conv=notrunc status=none
find /usr/share -type f -size -1M 2>/dev/null | head -20000 | xargs cat 2>/dev/null | head -c 256M | dd of="$IMG" bs=1M seek=256 conv=notrunc status=none
"$TB" backup --quiet --file "$IMG" --volume vol
# 20 incrementals, each rewriting the same 64 MiB hot region and 4 MiB elsewhere.
for i in $(seq 1 20); do
	dd if=/dev/urandom of="$IMG" bs=1M count=64 seek=300 conv=notrunc status=none
	dd if=/dev/urandom of="$IMG" bs=1M count=4 seek=$((600 + i * 8)) conv=notrunc status=none
	"$TB" backup --quiet --file "$IMG" --volume vol
done
rm -f "$W/single.tbk"
"$TB" send --quiet --file "$IMG" -o "$W/single.tbk"
chain_bytes=$(du -cb "$W"/store/volumes/*/*.tbk | tail -1 | cut -f1)
echo "volume 1 GiB; chain: full + 20 incrementals, $chain_bytes bytes; single full $(stat -c %s "$W/single.tbk") bytes"

t_chain=$(best sh -c "rm -f '$W/r1.img' '$W/state.db'; '$TB' restore vol --quiet --to '$W/r1.img'")
t_single=$(best sh -c "rm -f '$W/r2.img' '$W/state.db'; '$TB' apply --quiet '$W/single.tbk' --to '$W/r2.img'")
cmp "$IMG" "$W/r1.img"
cmp "$IMG" "$W/r2.img"
echo
echo "restore (onto a new file on disk, fsync included; both cmp equal to the image)"
printf "  %-46s %6ss\n" "thinback apply SINGLE-FULL --to FILE" "$t_single"
printf "  %-46s %6ss\n" "thinback restore vol --to FILE (21 files)" "$t_chain"
echo "  => the chain takes $(pct "$t_single" "$t_chain")% of the single full's time"

echo
echo "verify of the store ($chain_bytes bytes in $(ls "$W"/store/volumes/*/ | wc -l) files)"
cat "$W"/store/volumes/*/*.tbk >/dev/null
t_cat=$(best sh -c "cat '$W'/store/volumes/*/*.tbk")
t_ver=$(best "$TB" verify --quiet --store "$W/store")
printf "  %-46s %6ss %6s MiB/s\n" "cat FILES (page cache)" "$t_cat" "$(rate "$chain_bytes" "$t_cat")"
printf "  %-46s %6ss %6s MiB/s\n" "thinback verify --store (page cache)" "$t_ver" "$(rate "$chain_bytes" "$t_ver")"
echo "  => $(pct "$t_ver" "$t_cat")% of cat's throughput"
if [ "$(id -u)" -eq 0 ]; then
	t_catc=$(COLD=1 best sh -c "cat '$W'/store/volumes/*/*.tbk")
	t_verc=$(COLD=1 best "$TB" verify --quiet --store "$W/store")
	printf "  %-46s %6ss %6s MiB/s\n" "cat FILES (cold cache)" "$t_catc" "$(rate "$chain_bytes" "$t_catc")"
	printf "  %-46s %6ss %6s MiB/s\n" "thinback verify --store (cold cache)" "$t_verc" "$(rate "$chain_bytes" "$t_verc")"
	echo "  => $(pct "$t_verc" "$t_catc")% of cat's throughput"
fi

echo
echo "prune of an incremental vs the volume's size (restore.Merge of two incrementals of 32 + 16 MiB)"
go test -run XXX -bench PruneIncrementalVolumeSize -benchtime 20x -count 3 ./restore | grep Benchmark
rm -f "$W/r1.img" "$W/r2.img"
