#!/usr/bin/env bash
# Side-by-side benchmarks of a store in a local directory and on S3 (see
# BENCHMARKS.md), on the same image, in one run:
#  1. backup --file of the image into a new store: a directory, and a
#     prefix of a bucket of versitygw on loopback (posix back end on the
#     same disk as the directory);
#  2. restore of it from each, onto a new file (cmp'd with the image);
#  3. verify --store of each;
#  4. the time to bring a cold cache up to date for an S3 store with SNAPS
#     snapshots (list after the cache directory is removed), against a
#     warm one.
# Each timed command runs REPS times and the best is kept, with its peak
# RSS (GNU time's %M).
#
#   scripts/bench-s3.sh [WORKDIR]     (env: SIZE=1G SNAPS=1000 REPS=3)
#
# Small-scale check: SIZE=64M SNAPS=20 REPS=1 scripts/bench-s3.sh
set -euo pipefail
cd "$(dirname "$0")/.."
size=${SIZE:-1G}
snaps=${SNAPS:-1000}
reps=${REPS:-3}
W=${1:-$(mktemp -d "${TMPDIR:-/tmp}/thinback-bench-s3.XXXXXX")}
mkdir -p "$W"
gw=$(scripts/install-versitygw)
go build -o "$W/thinback" ./cmd/thinback
TB="$W/thinback"

# versitygw on a free loopback port, with a bucket.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$W/s3"
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
S3="s3:http://127.0.0.1:$port/bench"

# best CMD...: the best wall time of REPS runs, and that run's peak RSS.
best() {
	local t m bt=999999 bm=0
	for _ in $(seq "$reps"); do
		[ -n "${PREP:-}" ] && eval "$PREP"
		/usr/bin/time -o "$W/time.out" -f '%e %M' "$@" >/dev/null 2>&1
		read -r t m <"$W/time.out"
		if awk -v a="$t" -v b="$bt" 'BEGIN{exit !(a<b)}'; then bt=$t bm=$m; fi
	done
	echo "$bt $bm"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", b/s/1048576 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.0f", 100*a/b }'; }
mib() { awk -v k="$1" 'BEGIN{ printf "%.0f", k/1024 }'; }

# The image: half random, a quarter text, a quarter zeroes.
img="$W/vol.img"
bytes=$(numfmt --from=iec "$size")
rm -f "$img"
truncate -s "$bytes" "$img"
head -c $((bytes / 2)) /dev/urandom | dd of="$img" conv=notrunc status=none
find /usr/share -type f -size -1M 2>/dev/null | head -20000 | xargs cat 2>/dev/null | head -c $((bytes / 4)) |
	dd of="$img" bs=1M seek=$((bytes / 2 >> 20)) conv=notrunc status=none
echo "image $size ($bytes bytes): 1/2 random, 1/4 text, 1/4 zeroes; $(nproc) CPUs"

# Each backup goes into a new store, so each is a full of the same image.
# ($$ is each run's own shell: a new store each time.)
read -r t_bl m_bl < <(best sh -c "'$TB' backup --quiet --file '$img' --volume vol --store '$W'/dir\$\$")
read -r t_bs m_bs < <(best sh -c "'$TB' backup --quiet --file '$img' --volume vol --store '$S3'/b\$\$ --no-encrypt")
"$TB" backup --quiet --file "$img" --volume vol --store "$W/dir"
"$TB" backup --quiet --file "$img" --volume vol --store "$S3/main" --no-encrypt
stored=$(du -cb "$W"/dir/volumes/*/*.tbk | tail -1 | cut -f1)
rm -rf "$W"/dir[0-9]*

read -r t_rl m_rl < <(best sh -c "rm -f '$W/r.img' '$W/state.db'; '$TB' restore vol --quiet --store '$W/dir' --to '$W/r.img'")
cmp "$img" "$W/r.img"
read -r t_rs m_rs < <(best sh -c "rm -f '$W/r.img' '$W/state.db'; '$TB' restore vol --quiet --store '$S3/main' --to '$W/r.img'")
cmp "$img" "$W/r.img"
rm -f "$W/r.img"
read -r t_vl m_vl < <(best "$TB" verify --quiet --store "$W/dir")
read -r t_vs m_vs < <(best "$TB" verify --quiet --store "$S3/main")

echo
printf "%-34s %8s %9s %9s %8s\n" "" "time" "MiB/s" "of local" "peak RSS"
row() { printf "%-34s %7ss %9s %8s%% %5s MiB\n" "$1" "$2" "$(rate "$bytes" "$2")" "$3" "$(mib "$4")"; }
row "backup --file, local directory" "$t_bl" 100 "$m_bl"
row "backup --file, S3 (loopback)" "$t_bs" "$(pct "$t_bl" "$t_bs")" "$m_bs"
row "restore, local directory" "$t_rl" 100 "$m_rl"
row "restore, S3 (loopback)" "$t_rs" "$(pct "$t_rl" "$t_rs")" "$m_rs"
row "verify --store, local directory" "$t_vl" 100 "$m_vl"
row "verify --store, S3 (loopback)" "$t_vs" "$(pct "$t_vl" "$t_vs")" "$m_vs"
echo "(MiB/s of the image's $bytes bytes; stored: $stored bytes; \"of local\" is local time / S3 time)"

# A store with SNAPS snapshots: tiny changes of a small image.
small="$W/small.img"
head -c 1M /dev/urandom >"$small"
for i in $(seq "$snaps"); do
	printf '%08d' "$i" | dd of="$small" bs=1 seek=$((i % 1000 * 8)) conv=notrunc status=none
	"$TB" backup --quiet --file "$small" --volume many --store "$S3/many" --no-encrypt
done
read -r t_cold m_cold < <(PREP='rm -rf "$THINBACK_CACHE"' best "$TB" list --store "$S3/many")
read -r t_warm m_warm < <(best "$TB" list --store "$S3/many")
echo
echo "list of an S3 store with $snaps snapshots"
printf "  %-34s %7ss %5s MiB\n" "cold cache (cache removed first)" "$t_cold" "$(mib "$m_cold")"
printf "  %-34s %7ss %5s MiB\n" "warm cache" "$t_warm" "$(mib "$m_warm")"
