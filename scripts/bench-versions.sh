#!/usr/bin/env bash
# Side by side, in one run: thinback built from an older commit against the
# working tree, on the same data, for send, apply, inspect, verify and
# restore (see BENCHMARKS.md). A refactoring must leave every figure where it
# was; this shows it.
#
#   scripts/bench-versions.sh REV [WORKDIR]     (needs ~6 GB free)
#
# The image: a 1 GiB ext4 filesystem made with mkfs.ext4 -d from /usr/share
# and the Go sources plus 128 MiB of random data; each version backs it up
# into its own store as a full and 5 incrementals (64 MiB rewritten each
# time). Each command runs 5 times, the two versions taking turns, and the
# best time of each is kept, so that the noise of a shared machine falls on
# both alike. Inputs are in the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:?usage: scripts/bench-versions.sh REV [WORKDIR]}
W=${2:-$(mktemp -d /tmp/thinback-bench-versions.XXXXXX)}
mkdir -p "$W"

src="$W/src-old"
rm -rf "$src"
mkdir -p "$src"
git archive "$REV" | tar -x -C "$src"
(cd "$src" && go build -o "$W/old" ./cmd/thinback)
go build -o "$W/new" ./cmd/thinback
echo "old: $(git rev-parse --short "$REV") ($(git log -1 --format=%s "$REV" | cut -c1-60))"
echo "new: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo ' + working tree')"

IMG="$W/disk.img"
if [ ! -s "$IMG" ]; then
	stage="$W/stage"
	rm -rf "$stage"
	mkdir -p "$stage"
	cp -a /usr/share "$stage/"
	if [ -d "$(go env GOROOT)/src" ]; then cp -a "$(go env GOROOT)/src" "$stage/gosrc"; fi
	truncate -s 1G "$IMG"
	mkfs.ext4 -q -F -d "$stage" "$IMG" || { echo "the staged files do not fit in 1 GiB" >&2; exit 1; }
	rm -rf "$stage"
	dd if=/dev/urandom of="$IMG" bs=1M count=128 seek=800 conv=notrunc status=none
fi
size=$(stat -c %s "$IMG")
cat "$IMG" >/dev/null

# One store per version, built by that version: full + 5 incrementals of
# the same changes (the image is rewritten between backups and both
# versions back up each state).
rm -rf "$W"/store-* "$W"/state-* "$W/cur.img"
cp --sparse=always "$IMG" "$W/cur.img"
for i in 0 1 2 3 4 5; do
	if [ "$i" -gt 0 ]; then
		dd if=/dev/urandom of="$W/cur.img" bs=1M count=64 seek=$((100 + i * 100)) conv=notrunc status=none
	fi
	for v in old new; do
		THINBACK_STORE="$W/store-$v" THINBACK_STATE="$W/state-$v.db" "$W/$v" backup --quiet --file "$W/cur.img" --volume vol
	done
done
rm -f "$W/full.tbk"
"$W/new" send --quiet --file "$IMG" -o "$W/full.tbk"
data=$("$W/new" inspect --json "$W/full.tbk" | awk -F': ' '/"data_bytes"/{gsub(/,/,"",$2); print $2}')

# run NAME CMD: CMD is a shell snippet in which $TB is the binary and $V the
# version's name; prints a table row: the best wall time and the best CPU
# time (user + system) of each, and the peak RSS.
# apply and restore remove the state file first: a new target file may get
# the inode number of the one just removed, and a restore must not take it
# for the target it already restored.
declare -A best cpu rss
run() {
	local name=$1 cmd=$2 t u k m
	for v in old new; do best[$v]=999999; cpu[$v]=999999; rss[$v]=0; done
	for _ in 1 2 3 4 5; do
		for v in old new; do
			TB="$W/$v" V=$v THINBACK_STORE="$W/store-$v" THINBACK_STATE="$W/state-$v.db" \
				/usr/bin/time -o "$W/time.out" -f '%e %U %S %M' sh -c "$cmd" >/dev/null 2>"$W/err.out" ||
				{ echo "$name ($v) failed:" >&2; cat "$W/err.out" >&2; exit 1; }
			read -r t u k m < "$W/time.out"
			if awk -v a="$t" -v b="${best[$v]}" 'BEGIN{exit !(a<b)}'; then best[$v]=$t; fi
			u=$(awk -v a="$u" -v b="$k" 'BEGIN{printf "%.2f", a+b}')
			if awk -v a="$u" -v b="${cpu[$v]}" 'BEGIN{exit !(a<b)}'; then cpu[$v]=$u; fi
			if [ "$m" -gt "${rss[$v]}" ]; then rss[$v]=$m; fi
		done
	done
	printf "| %-40s | %5s s | %5s s | %4s %% | %5s s | %5s s | %3s / %3s MiB |\n" "$name" "${best[old]}" "${best[new]}" \
		"$(awk -v a="${best[old]}" -v b="${best[new]}" 'BEGIN{ if (b<=0) b=0.001; printf "%.0f", 100*a/b }')" \
		"${cpu[old]}" "${cpu[new]}" "$((rss[old] / 1024))" "$((rss[new] / 1024))"
}

echo "image: $size bytes, $data bytes of DATA; $(nproc) CPUs; 5 turns each, best kept"
echo
echo "| command | old | new | new speed vs old | CPU old | CPU new | peak RSS old / new |"
echo "|---|---|---|---|---|---|---|"
run "send --file IMG -o -" '"$TB" send --quiet --file "'"$IMG"'" -o -'
run "apply FULL --to FILE (fsync)" 'rm -f "'"$W"'/t-$V" "$THINBACK_STATE"; "$TB" apply --quiet "'"$W"'/full.tbk" --to "'"$W"'/t-$V"'
run "inspect FULL" '"$TB" inspect "'"$W"'/full.tbk"'
run "verify (store: full + 5 incrementals)" '"$TB" verify --quiet'
run "restore vol --to FILE (6 files, fsync)" 'rm -f "'"$W"'/r-$V" "$THINBACK_STATE"; "$TB" restore --quiet vol --to "'"$W"'/r-$V"'
cmp "$W/cur.img" "$W/r-old"
cmp "$W/cur.img" "$W/r-new"
cmp "$IMG" "$W/t-new"
echo
echo "(restored and applied files cmp equal to their images)"
rm -f "$W"/t-* "$W"/r-* "$W/cur.img"
