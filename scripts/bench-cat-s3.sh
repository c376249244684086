#!/usr/bin/env bash
# cat of one point in time from an S3 store against cat of the same point
# in time from a local store, side by side (BENCHMARKS.md, "cat from S3").
# The same image is backed up into a directory and into a prefix of a
# bucket of versitygw on loopback (posix back end on the same disk): a
# full, then INCRS incrementals each rewriting 1/16 of it at a random
# place. Then `thinback cat` of the newest point in time to /dev/null,
# local and S3 alternating, REPS times each; medians reported. Both
# outputs are compared with the image once, before timing.
#
#   scripts/bench-cat-s3.sh [WORKDIR]     (env: SIZE=1G INCRS=3 REPS=3)
#
# Small-scale check: SIZE=64M REPS=1 scripts/bench-cat-s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-1G}
incrs=${INCRS:-3}
reps=${REPS:-3}
W=${1:-$(mktemp -d "${TMPDIR:-/tmp}/thinback-bench-cat-s3.XXXXXX")}
mkdir -p "$W"
gw=$(scripts/install-versitygw)
go build -o "$W/thinback" ./cmd/thinback
TB="$W/thinback"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$W/s3" "$W/dir" "$W/cache"
mkdir -p "$W/s3/bench"
ROOT_ACCESS_KEY=bench ROOT_SECRET_KEY=bench-secret-key-0123456789 \
	"$gw" --port "127.0.0.1:$port" --keep-alive --quiet posix "$W/s3" >"$W/versitygw.log" 2>&1 &
gwpid=$!
trap 'kill "$gwpid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	if curl -s -o /dev/null "http://127.0.0.1:$port/"; then break; fi
	sleep 0.1
done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key-0123456789 AWS_REGION=us-east-1
export THINBACK_CACHE="$W/cache" THINBACK_STATE="$W/state.db"
S3="s3:http://127.0.0.1:$port/bench/cat"

# The image: half random, a quarter text, a quarter zeroes.
img="$W/vol.img"
bytes=$(numfmt --from=iec "$size")
rm -f "$img"
truncate -s "$bytes" "$img"
head -c $((bytes / 2)) /dev/urandom | dd of="$img" conv=notrunc status=none
find /usr/share -type f -size -1M 2>/dev/null | head -20000 | xargs cat 2>/dev/null | head -c $((bytes / 4)) |
	dd of="$img" bs=1M seek=$((bytes / 2 >> 20)) conv=notrunc status=none
"$TB" init --store "$S3" --no-encrypt >/dev/null
for i in $(seq 0 "$incrs"); do
	if [ "$i" -gt 0 ]; then
		mb=$((bytes >> 20))
		seek=$((RANDOM % (mb - mb / 16)))
		head -c $((bytes / 16)) /dev/urandom | dd of="$img" bs=1M seek="$seek" conv=notrunc status=none
	fi
	"$TB" backup --quiet --file "$img" --volume vol --store "$W/dir"
	"$TB" backup --quiet --file "$img" --volume vol --store "$S3"
done
stored=$(du -cb "$W"/dir/volumes/*/*.tbk | tail -1 | cut -f1)
echo "image $size ($bytes bytes): 1/2 random, 1/4 text, 1/4 zeroes; a full and $incrs incrementals of 1/16 each;"
echo "$stored bytes stored; $(nproc) CPUs; versitygw on 127.0.0.1"

rm -f "$W/l.img" "$W/s.img"
"$TB" cat vol --quiet --store "$W/dir" -o "$W/l.img"
"$TB" cat vol --quiet --store "$S3" -o "$W/s.img"
cmp "$img" "$W/l.img"
cmp "$img" "$W/s.img"
rm -f "$W/l.img" "$W/s.img"

# timeit CMD...: "WALL CPU SERVER": wall seconds, thinback's CPU seconds
# (user + system), and versitygw's CPU seconds meanwhile (from /proc).
gwcpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$gwpid/stat"; }
timeit() {
	local a b
	a=$(gwcpu)
	/usr/bin/time -o "$W/time.out" -f '%e %U %S' "$@" >/dev/null 2>&1
	b=$(gwcpu)
	awk -v a="$a" -v b="$b" '{ printf "%s %.2f %.2f\n", $1, $2 + $3, b - a }' "$W/time.out"
}
tl=() ts=() cl=() cs=() gs=()
for _ in $(seq "$reps"); do
	read -r w c _ < <(timeit "$TB" cat vol --quiet --store "$W/dir" -o -)
	tl+=("$w") cl+=("$c")
	read -r w c g < <(timeit "$TB" cat vol --quiet --store "$S3" -o -)
	ts+=("$w") cs+=("$c") gs+=("$g")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ml=$(median "${tl[@]}")
ms=$(median "${ts[@]}")
rate() { awk -v b="$bytes" -v s="$1" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", b/s/1048576 }'; }
echo "cat from a local store: wall ${tl[*]} s, median $ml s, $(rate "$ml") MiB/s; thinback CPU ${cl[*]} s"
echo "cat from S3:            wall ${ts[*]} s, median $ms s, $(rate "$ms") MiB/s; thinback CPU ${cs[*]} s, versitygw CPU ${gs[*]} s"
awk -v a="$ml" -v b="$ms" 'BEGIN{ printf "S3 / local: %.0f %%\n", 100*a/b }'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
