# bench/common.sh: shell helpers the benchmark scripts share (sourced, after they cd to the repository root).

# med X...: the median of the numbers (the mean of the middle two for an even count)
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
