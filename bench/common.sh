# bench/common.sh: shell helpers the benchmark scripts share (sourced, after they cd to the repository root).

# med X...: the median of the numbers (the mean of the middle two for an even count)
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# old_build REV NAME: git revision REV checked out in a temporary worktree (removed when the script exits) with
# this tree's bench/NAME/bench_NAME.c copied in (the same timing code on both sides), bench_NAME built there
# and here; sets OLD to the old build's directory
old_build() {
  OLD_TMP=$(mktemp -d)
  trap 'git worktree remove --force "$OLD_TMP/old" >/dev/null 2>&1 || true; rm -rf "$OLD_TMP"' EXIT
  git worktree add -q --detach "$OLD_TMP/old" "$1"
  mkdir -p "$OLD_TMP/old/bench/$2"
  cp "bench/$2/bench_$2.c" "$OLD_TMP/old/bench/$2/"
  (cd "$OLD_TMP/old" && bash bench/build.sh "$2") >/dev/null
  bash bench/build.sh "$2" >/dev/null
  OLD="$OLD_TMP/old/build"
}
