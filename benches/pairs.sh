#!/usr/bin/env bash
# benches/pairs.sh COSTBIN SERVERS ROUNDS RUNS BASE LABEL...
#
# Whole-process CPU cost of each LABEL over BASE's at SERVERS servers: per round one process
# of RUNS runs of LABEL and one of BASE (order alternating), their task-clock's ratio. Prints
# the median ratio, the per-round ratios and the medians in ms a process. Fixed costs (the
# process's, each run's build) are included; `benches/slope.sh` takes them out. COSTBIN is
# the `cost` bench's binary (`cargo bench --bench cost --no-run` prints its path); labels
# are `benches/cost.rs`'s. Needs `perf`. The README's grids are made with it:
#
#   bash benches/pairs.sh target/release/deps/cost-HASH 10000 7 6 round_robin c3_indexed prequal
set -euo pipefail
source "$(dirname "$0")/pairing.sh"
bin=$1; n=$2; rounds=$3; runs=$4; base=$5; shift 5
ms() { perf stat -e task-clock -x, "$bin" "$1" "$n" "$runs" 2>&1 >/dev/null | awk -F, '/task-clock/{print $1}'; }
for label in "$@"; do
  paired "$rounds" ms "$base" "$label"
  printf '%-28s n=%-6s ratio %.3f  [%s]  base_ms %.1f  label_ms %.1f  load %s\n' "$label" "$n" "$(med "${rs[@]}")" \
    "$(ratios)" "$(med "${as[@]}")" "$(med "${bs[@]}")" "$(load)"
done
