#!/bin/sh
# Replays every shipped scenario live (`lbsim live --time-scale auto`) on this machine and
# prints a Markdown table: scenario, verdict (pass / FAIL with the figures outside tolerance /
# no verdict with the lag / why it cannot be replayed), time scale, wall-clock time; then a
# caption line with the date, the settings and the machine's load average before and after.
#
#   sh scripts/live-verdicts.sh > live-verdicts.md          # full scenarios: an hour or more
#   SHORT=5 sh scripts/live-verdicts.sh                    # each shortened to 1 s warm-up + 5 s
#
# Environment: LBSIM (default target/release/lbsim), OUT (default reports/live-verdicts),
# TIMEOUT per scenario in seconds (default 3600), SHORT (duration in seconds, warm-up 1 s;
# unset = as shipped), EXTRA (more `lbsim live` flags, e.g. "--strategy round_robin"),
# SCENARIOS (files; default scenarios/*.toml).
set -u
LBSIM=${LBSIM:-target/release/lbsim}
OUT=${OUT:-reports/live-verdicts}
TIMEOUT=${TIMEOUT:-3600}
EXTRA=${EXTRA:-}
mkdir -p "$OUT"
if [ ! -x "$LBSIM" ]; then
  echo "error: $LBSIM not found; run \`cargo build --release\` or set LBSIM" >&2
  exit 2
fi
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
echo "| scenario | live verdict | time scale | wall-clock |"
echo "| --- | --- | --- | ---: |"
for file in ${SCENARIOS:-scenarios/*.toml}; do
  name=$(basename "$file" .toml)
  dir="$OUT/$name"
  mkdir -p "$dir"
  src="$file"
  if [ -n "${SHORT:-}" ]; then
    src="$dir/short.toml"
    sed -e "s/^duration = .*/duration = $SHORT.0/" -e 's/^warmup = .*/warmup = 1.0/' "$file" > "$src"
  fi
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$TIMEOUT" "$LBSIM" live "$src" --time-scale auto --out "$dir/out" $EXTRA \
    > "$dir/stdout.txt" 2> "$dir/stderr.txt"
  status=$?
  took=$(( $(date +%s) - start ))
  # Every point of a sweep picks its own scale.
  scale=$(sed -n 's/^time scale \([0-9.]*\) (auto.*/\1/p' "$dir/stdout.txt" | sort -un | paste -sd/ -)
  points=$(grep -c '^sweep point ' "$dir/stdout.txt")
  case $status in
    0) verdict="pass" ;;
    1) verdict=$(sed -n 's/^verdict: FAIL — //p' "$dir/stdout.txt" | paste -sd';' -)
       verdict="FAIL: ${verdict:-see $dir/stdout.txt}" ;;
    2) verdict=$(grep -m1 '^error:' "$dir/stderr.txt" | sed 's/^error: //')
       verdict="cannot be replayed: ${verdict:-see $dir/stderr.txt}" ;;
    3) verdict=$(grep -m1 '^no verdict' "$dir/stderr.txt")
       verdict="${verdict:-no verdict}" ;;
    124) verdict="not finished within ${TIMEOUT} s" ;;
    *) verdict="exit status $status: see $dir/stderr.txt" ;;
  esac
  if [ "$points" -gt 0 ]; then
    verdict="$points sweep points: $verdict"
  fi
  # Table cells cannot hold `|` or new lines.
  verdict=$(printf '%s' "$verdict" | tr '|\n' '/ ')
  echo "| \`$name\` | $verdict | ${scale:--} | ${took} s |"
done
echo
echo "Run on $(nproc) cores, started $started; load average (1, 5, 15 min) $load_before before, $(load) after;" \
  "${SHORT:+each scenario shortened to 1 s warm-up and $SHORT s in all; }--time-scale auto${EXTRA:+ $EXTRA}."
