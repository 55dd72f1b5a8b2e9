#!/usr/bin/env bash
# benches/slopebin.sh A B LABEL SERVERS ROUNDS
#
# Per-request CPU cost of one label in two builds: for each of the `cost` bench's binaries A
# and B, the task-clock of one run of 3M requests minus one of 1M (one run a process, so the
# fixed costs cancel), halved; A and B alternate in order each round. Prints the median of
# B over A, the per-round ratios and the medians in ns a request. To compare a change with
# the code before it, copy the `cost` binary aside before rebuilding. Needs `perf`.
#
#   bash benches/slopebin.sh /tmp/cost-before target/release/deps/cost-HASH c3_indexed 10000 7
set -euo pipefail
source "$(dirname "$0")/pairing.sh"
a=$1; b=$2; label=$3; n=$4; rounds=$5
ms() { perf stat -e task-clock -x, "$1" "$label" "$n" 1 "$2" 2>&1 >/dev/null | awk -F, '/task-clock/{print $1}'; }
slope() { local x y; x=$(ms "$1" 1000000); y=$(ms "$1" 3000000); echo "($y - $x) / 2" | bc -l; }
paired "$rounds" slope "$a" "$b"
printf '%s n=%s: B/A %.3f [%s] A %.1f B %.1f ns/req load %s\n' "$label" "$n" "$(med "${rs[@]}")" \
  "$(ratios)" "$(med "${as[@]}")" "$(med "${bs[@]}")" "$(load)"
