#!/bin/sh
# Replays every shipped scenario live (`lbsim live --time-scale auto`) on this machine and
# prints a Markdown table: scenario, verdict (pass / FAIL with the figures outside tolerance /
# no verdict with the lag / the exact reason it cannot be replayed), time scale, wall-clock
# time, the 1-minute load average as it started; then a caption line with the date, the settings and the machine's load average
# before and after. A scenario with a [sweep] is replayed at every point (each point is a
# scenario of its own, with its own time scale) and its cell gives each point's verdict.
#
#   sh scripts/live-verdicts.sh > live-verdicts.md          # full scenarios: hours
#   SHORT=5 sh scripts/live-verdicts.sh                    # each shortened to 1 s warm-up + 5 s
#
# Environment:
#   LBSIM     the binary (default target/release/lbsim)
#   OUT       output folder (default reports/live-verdicts): per scenario `log.txt` (stdout
#             and stderr of `lbsim live`, in order), `short.toml` and `out/` (its reports)
#   SHORT     duration in seconds of every scenario (warm-up 1 s); unset = as shipped
#   SWEEP_SHORT  the same for each point of a sweep (default SHORT): a sweep replays
#             points × strategies × SWEEP_SHORT × scale seconds, so e.g. SWEEP_SHORT=3
#             keeps load-by-balancers' 9 points × 5 strategies within minutes
#   TIMEOUT   limit per scenario in seconds (default 3600; 600 with SHORT): at the limit
#             `lbsim live` gets SIGINT and writes the strategies that finished (then SIGKILL
#             60 s later); the row says so
#   SWEEP_TIMEOUT  limit per sweep point (default TIMEOUT): a sweep gets points × this
#   EXTRA     more `lbsim live` flags, e.g. "--strategy round_robin"
#   SCENARIOS files (default scenarios/*.toml)
set -u
LBSIM=${LBSIM:-target/release/lbsim}
OUT=${OUT:-reports/live-verdicts}
if [ -n "${SHORT:-}" ]; then TIMEOUT=${TIMEOUT:-600}; else TIMEOUT=${TIMEOUT:-3600}; fi
SWEEP_SHORT=${SWEEP_SHORT:-${SHORT:-}}
SWEEP_TIMEOUT=${SWEEP_TIMEOUT:-$TIMEOUT}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
if [ ! -x "$LBSIM" ]; then
  echo "error: $LBSIM not found; run \`cargo build --release\` or set LBSIM" >&2
  exit 2
fi
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "| scenario | live verdict | time scale | wall-clock | load |"
echo "| --- | --- | --- | ---: | ---: |"
for file in ${SCENARIOS:-scenarios/*.toml}; do
  name=$(basename "$file" .toml)
  dir="$OUT/$name"
  rm -rf "$dir/out"
  mkdir -p "$dir"
  src="$file"
  points=1
  per_point=$TIMEOUT
  short=${SHORT:-}
  if grep -q '^\[sweep\]' "$file"; then
    short=$SWEEP_SHORT
    per_point=$SWEEP_TIMEOUT
    # Points: the product of the lengths of the sweep's lists (`load = [..]`, `[sweep.by]`).
    points=$(awk '/^\[sweep/ { s = 1; next } /^\[/ { s = 0 }
      s && /= *\[/ { v = $0; sub(/#.*/, "", v); n = gsub(/,/, ",", v) + 1; p = (p ? p : 1) * n }
      END { print (p ? p : 1) }' "$file")
  fi
  if [ -n "$short" ]; then
    src="$dir/short.toml"
    sed -e "s/^duration = .*/duration = $short.0/" -e 's/^warmup = .*/warmup = 1.0/' "$file" > "$src"
  fi
  limit=$(( per_point * points ))
  # The machine's 1-minute load average as the scenario starts: on a busy machine the
  # backends' sleeps overshoot (calibration rows) and the driver lags.
  load1=$(cut -d' ' -f1 /proc/loadavg)
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout -s INT -k 60 "$limit" "$LBSIM" live "$src" --time-scale auto --out "$dir/out" $EXTRA \
    > "$dir/log.txt" 2>&1
  status=$?
  took=$(( $(date +%s) - start ))
  # Every point of a sweep picks its own scale.
  scale=$(sed -n 's/^time scale \([0-9.]*\) (auto.*/\1/p' "$dir/log.txt" | sort -un | paste -sd/ -)
  # One verdict per point (one in all without a sweep), from the log: the reason of a
  # refusal verbatim (with its fix), the failed figures of a FAIL (the first 8, then how
  # many; all are in out/…/comparison.csv), the lag of a "no verdict".
  verdict=$(awk -v limit="$limit" -v status="$status" '
    function flush() { if (v != "") { out = out (out ? "; " : "") (p ? p ": " : "") v } v = ""; err = 0; nf = 0; lagged = 0 }
    function list(n, a,   s, i) { s = a[1]; for (i = 2; i <= n && i <= 8; i++) s = s ", " a[i]; if (n > 8) s = s ", … (" n " in all, see comparison.csv)"; return s }
    / FAIL$/ && NF >= 3 { f[++nf] = $1 " " $2 }
    / not judged \(lag\)$/ { lagged = 1 }
    /^sweep point [0-9]+ of [0-9]+: / { flush(); p = $0; sub(/^sweep point /, "", p); sub(/ \(.*$/, "", p); sub(/^[0-9]+ of [0-9]+: /, "", p); next }
    /^error: live mode cannot replay/ { v = "cannot be replayed: " substr($0, 8); err = 1; next }
    /^error: / { v = "the replay failed: " substr($0, 8); err = 1; next }
    err && /^  / { s = $0; sub(/^ +/, "", s); v = v " — " s; next }
    { err = 0 }
    /^verdict: pass/ { v = "pass"; next }
    /^verdict: FAIL — / {
      s = $0; sub(/^verdict: FAIL — /, "", s)
      n = split(s, a, ", "); v = "FAIL: " list(n, a); next }
    /^no verdict: / { v = $0; next }
    /^interrupted: / {
      s = substr($0, 14); sub(/;.*$/, "", s)
      v = "stopped at the " limit " s limit after " s ", which " (nf ? "FAIL: " list(nf, f) : lagged ? "give no verdict (lag)" : "pass"); next }
    /^interrupted before any strategy finished/ { v = "stopped at the " limit " s limit before any strategy finished"; next }
    END { flush(); print out }' "$dir/log.txt")
  case $status in
    0|1|2|3|130) ;;
    124) [ -n "$verdict" ] || verdict="stopped at the ${limit} s limit" ;;
    137) verdict="${verdict:+$verdict; }killed 60 s after the ${limit} s limit" ;;
    *) verdict="${verdict:+$verdict; }exit status $status: see $dir/log.txt" ;;
  esac
  [ -n "$verdict" ] || verdict="exit status $status: see $dir/log.txt"
  npoints=$(grep -c '^sweep point ' "$dir/log.txt")
  if [ "$npoints" -gt 0 ]; then
    verdict="$npoints of $points sweep points: $verdict"
  fi
  # Table cells cannot hold `|` or new lines.
  verdict=$(printf '%s' "$verdict" | tr '|\n' '/ ')
  echo "| \`$name\` | $verdict | ${scale:--} | ${took} s | $load1 |"
done
echo
echo "Run on $(nproc) cores, started $started, finished $(date -u '+%H:%M UTC'); load average (1, 5, 15 min) $load_before before, $(load) after;" \
  "${SHORT:+each scenario shortened to 1 s warm-up and $SHORT s in all (sweep points $SWEEP_SHORT s); }--time-scale auto${EXTRA:+ $EXTRA}; limit ${TIMEOUT} s per scenario, ${SWEEP_TIMEOUT} s per sweep point."
