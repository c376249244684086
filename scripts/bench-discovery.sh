#!/bin/bash
# bench-discovery.sh: how much does thinback's delta discovery add to the
# thin tool it runs?
#
# Builds real pool metadata with thin_restore from generated XML (two thin
# devices of MAPPINGS mappings sharing all but CHANGED of them, spread at
# random), then times side by side, alternating, in one run:
#   - thin_delta alone (stdout to /dev/null) vs lvmthin.Discover
#     (thin_delta + streaming XML parse + extent building + spool), and
#   - thin_dump --dev-id alone vs Discover for a full,
# and reports the peak RSS of the parsing process and of the tool.
# Needs thin-provisioning-tools and Go; no root, no kernel support.
#
# Usage: scripts/bench-discovery.sh   (env: MAPPINGS=3000000 CHANGED=0.01 REPS=3)
set -euo pipefail

mappings=${MAPPINGS:-3000000}
changed=${CHANGED:-0.01}
reps=${REPS:-3}
cd "$(dirname "$0")/.."
for p in thin_restore thin_delta thin_dump; do
	command -v "$p" >/dev/null || { echo "bench-discovery: $p not found (install thin-provisioning-tools)" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/thinback-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/discbench" ./lvmthin/internal/discbench
"$dir/discbench" gen -mappings "$mappings" -changed "$changed" -o "$dir/pool.xml"
# thin_restore writes into an existing file large enough for the metadata
# (it does not share nodes between devices: 16-byte entries in leaves it may
# leave half full, twice, plus space maps; the file is sparse).
truncate -s $(( (mappings * 128 / 1048576 + 64) * 1048576 )) "$dir/meta.bin"
start=$(date +%s.%N)
thin_restore -i "$dir/pool.xml" -o "$dir/meta.bin"
echo "thin_restore: $(echo "$(date +%s.%N) - $start" | bc) s, metadata $(du -h "$dir/meta.bin" | cut -f1) used"
echo "tools: $(thin_delta --version 2>&1 | head -n1) (thin-provisioning-tools), $(go version | cut -d' ' -f3), $(nproc) CPUs"
"$dir/discbench" run -meta "$dir/meta.bin" -reps "$reps"
