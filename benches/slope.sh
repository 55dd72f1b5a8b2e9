#!/usr/bin/env bash
# benches/slope.sh COSTBIN SERVERS ROUNDS BASE LABEL...
#
# Per-request CPU cost of each LABEL over BASE's at SERVERS servers, without fixed costs: per
# label the task-clock of one run of 3M requests minus one of 1M (one run a process, so the
# process's and the run's fixed costs cancel), halved, over BASE's the same way in the same
# round (order alternating). Prints the median ratio, the per-round ratios and the medians in
# ns a request. COSTBIN is the `cost` bench's binary (`cargo bench --bench cost --no-run`
# prints its path); labels are `benches/cost.rs`'s (e.g. `w/c3_indexed`). Needs `perf`.
#
#   bash benches/slope.sh target/release/deps/cost-HASH 10000 5 round_robin c3_indexed
set -euo pipefail
source "$(dirname "$0")/pairing.sh"
bin=$1; n=$2; rounds=$3; base=$4; shift 4
ms() { perf stat -e task-clock -x, "$bin" "$1" "$n" 1 "$2" 2>&1 >/dev/null | awk -F, '/task-clock/{print $1}'; }
slope() { local a b; a=$(ms "$1" 1000000); b=$(ms "$1" 3000000); echo "($b - $a) / 2" | bc -l; }
for label in "$@"; do
  paired "$rounds" slope "$base" "$label"
  printf '%-30s n=%-6s slope ratio %.3f [%s] base %.1f ns label %.1f ns load %s\n' "$label" "$n" "$(med "${rs[@]}")" \
    "$(ratios)" "$(med "${as[@]}")" "$(med "${bs[@]}")" "$(load)"
done
