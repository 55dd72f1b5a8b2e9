# benches/pairing.sh: sourced by slope.sh, slopebin.sh and pairs.sh (not run on its own).

# med X...: the median of the numbers.
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

# paired ROUNDS FN A B: `FN A` and `FN B` (each prints a number) ROUNDS times, their order
# alternating from round to round; sets the arrays `as` and `bs` (the numbers) and `rs`
# (B over A, per round).
paired() {
  local rounds=$1 fn=$2 a=$3 b=$4 x y r
  as=(); bs=(); rs=()
  for r in $(seq 1 "$rounds"); do
    if (( r % 2 )); then x=$("$fn" "$a"); y=$("$fn" "$b"); else y=$("$fn" "$b"); x=$("$fn" "$a"); fi
    rs+=("$(echo "$y / $x" | bc -l)"); as+=("$x"); bs+=("$y")
  done
}

# ratios: the per-round ratios of the last `paired`, two decimals each.
ratios() { printf '%.2f ' "${rs[@]}"; }

# load: the machine's load average over the last minute.
load() { cut -d' ' -f1 /proc/loadavg; }
