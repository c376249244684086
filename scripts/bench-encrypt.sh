#!/usr/bin/env bash
# Side by side, in one run, on the same data: the commands on a plain store
# against the same commands on an encrypted one (see BENCHMARKS.md
# "Encryption (commands)"): send -o of an image, restore of a chain, verify
# of a store (with the key, and without it), and the peak RSS of each.
#
#   scripts/bench-encrypt.sh [WORKDIR]     (needs ~5 GB free)
#   RUNS=5 SIZE=1G scripts/bench-encrypt.sh
#
# The image: a SIZE ext4 filesystem made with mkfs.ext4 -d from /usr/share,
# plus 128 MiB of random data. Each store gets a full and 3 incrementals of
# the same changes (64 MiB rewritten each time); the encrypted store is made
# by init --encrypt and unlocked with a key file (a key-file slot: no
# Argon2id in the timings). Each command runs RUNS times, plain and
# encrypted taking turns, so the noise of a shared machine falls on both
# alike; best, median and worst are printed. Inputs are in the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in -*) sed -n '2,16p' "$0" | cut -c3-; exit 2 ;; esac
W=${1:-$(mktemp -d /tmp/thinback-bench-encrypt.XXXXXX)}
RUNS=${RUNS:-5}
SIZE=${SIZE:-1G}
mkdir -p "$W"

go build -o "$W/thinback" ./cmd/thinback
TB="$W/thinback"
if ! "$TB" init --help | grep -- --encrypt >/dev/null; then # not -q: init must not die of SIGPIPE under pipefail
	echo "this thinback has no init --encrypt: it cannot make an encrypted store" >&2
	exit 1
fi
echo "thinback $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' + working tree'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"

IMG="$W/disk.img"
if [ ! -s "$IMG" ]; then
	truncate -s "$SIZE" "$IMG"
	mkfs.ext4 -q -F -d /usr/share "$IMG" || { echo "/usr/share does not fit in $SIZE: give SIZE=2G" >&2; exit 1; }
	size=$(stat -c %s "$IMG")
	dd if=/dev/urandom of="$IMG" bs=1M count=128 seek=$((size / 1048576 - 200)) conv=notrunc status=none
fi
size=$(stat -c %s "$IMG")
cat "$IMG" >/dev/null

# The stores: the same full and incrementals into each.
rm -rf "$W"/store-* "$W"/state-* "$W/key" "$W/cur.img"
export THINBACK_PASSWORD=bench-passphrase
"$TB" init --store "$W/store-enc" --encrypt --new-key-file "$W/key" --pbkdf-memory 8 --pbkdf-time 1 >/dev/null 2>&1
unset THINBACK_PASSWORD
cp --sparse=always "$IMG" "$W/cur.img"
for i in 0 1 2 3; do
	if [ "$i" -gt 0 ]; then
		dd if=/dev/urandom of="$W/cur.img" bs=1M count=64 seek=$((i * 150)) conv=notrunc status=none
	fi
	THINBACK_STATE="$W/state-b.db" "$TB" backup --quiet --file "$W/cur.img" --volume vol --store "$W/store-plain"
	THINBACK_STATE="$W/state-b.db" "$TB" backup --quiet --file "$W/cur.img" --volume vol --store "$W/store-enc" --key-file "$W/key"
done
echo "image $(numfmt --to=iec "$size"), stores: plain $(du -sh "$W/store-plain" | cut -f1), encrypted $(du -sh "$W/store-enc" | cut -f1)"

# run NAME PLAIN ENC: each a shell snippet; prints best/median/worst wall
# time of each, the encrypted one's speed against the plain one's (best
# to best, median to median), the median CPU time (user + system) of each
# and the peak RSS of each (the largest seen). A run removes the output
# and state file first, and waits for their writeback (untimed).
stats() { sort -n | awk '{a[NR]=$1} END{printf "%s %s %s", a[1], a[int((NR+1)/2)], a[NR]}'; }
run() {
	local name=$1 t u k m v
	local -A cmd=([plain]=$2 [enc]=$3) wall=() cpu=() rss=([plain]=0 [enc]=0)
	for _ in $(seq "$RUNS"); do
		for v in plain enc; do
			rm -rf "$W/out" "$W/state-r.db"
			sync # the last run's writeback is not this run's
			THINBACK_STATE="$W/state-r.db" /usr/bin/time -o "$W/time.out" -f '%e %U %S %M' sh -c "${cmd[$v]}" >/dev/null 2>"$W/err.out" ||
				{ echo "$name ($v) failed:" >&2; cat "$W/err.out" >&2; exit 1; }
			read -r t u k m < "$W/time.out"
			wall[$v]+="$t "
			cpu[$v]+="$(awk -v a="$u" -v b="$k" 'BEGIN{printf "%.2f", a+b}') "
			[ "$m" -gt "${rss[$v]}" ] && rss[$v]=$m
		done
	done
	read -r pb pm pw <<<"$(tr ' ' '\n' <<<"${wall[plain]}" | grep . | stats)"
	read -r eb em ew <<<"$(tr ' ' '\n' <<<"${wall[enc]}" | grep . | stats)"
	read -r _ pc _ <<<"$(tr ' ' '\n' <<<"${cpu[plain]}" | grep . | stats)"
	read -r _ ec _ <<<"$(tr ' ' '\n' <<<"${cpu[enc]}" | grep . | stats)"
	awk -v n="$name" -v pb="$pb" -v pm="$pm" -v pw="$pw" -v eb="$eb" -v em="$em" -v ew="$ew" -v pc="$pc" -v ec="$ec" \
		-v pr="${rss[plain]}" -v er="${rss[enc]}" -v s="$size" 'BEGIN{
		printf "| %s | %.2f / %.2f / %.2f s | %.2f / %.2f / %.2f s | %d MiB/s | %d %% / %d %% | %.2f / %.2f s | %d / %d MiB |\n",
			n, pb, pm, pw, eb, em, ew, s/1048576/em, 100*pb/eb, 100*pm/em, pc, ec, pr/1024, er/1024 }'
}

echo
echo "RUNS=$RUNS; times best / median / worst; speed of the encrypted command against the plain one, best to best / median to median; MiB/s of the image"
echo
echo "| command | plain | encrypted | encrypted MiB/s (median) | encrypted speed vs plain | CPU plain / encrypted (median) | peak RSS plain / encrypted |"
echo "|---|---|---|---|---|---|---|"
run "send --file IMG -o FILE" \
	"$TB send --quiet --file $IMG -o $W/out" \
	"$TB send --quiet --file $IMG --key-file $W/key -o $W/out"
run "restore vol --to FILE (4 files, fsync)" \
	"$TB restore --quiet vol --store $W/store-plain --to $W/out" \
	"$TB restore --quiet vol --store $W/store-enc --key-file $W/key --to $W/out"
run "verify --store (4 files)" \
	"$TB verify --quiet --store $W/store-plain" \
	"$TB verify --quiet --store $W/store-enc --key-file $W/key"
run "verify --store, encrypted: --no-key" \
	"$TB verify --quiet --store $W/store-plain" \
	"$TB verify --quiet --store $W/store-enc --no-key"

# The restored images are the image.
rm -f "$W/state-r.db" "$W/r-enc"
THINBACK_STATE="$W/state-r.db" "$TB" restore --quiet vol --store "$W/store-enc" --key-file "$W/key" --to "$W/r-enc"
cmp "$W/cur.img" "$W/r-enc" && echo && echo "the encrypted store's restore is the image"
