#!/usr/bin/env bash
# docs/results.md's CoNLL-2003 figures: the shipped NER recipes with the real pretrained model, and the
# same jobs with PyTorch + transformers (bench/conll2003/peer_train.py: AutoModelForTokenClassification,
# the same rows, alignment, hyperparameters and seqeval scoring), pft and peer alternating.
# Usage: [SEEDS="42 43"] bash bench/conll2003/results.sh [OUT_DIR=runs/results-conll] [recipes...]
#        (from the repository root). Prints one line per run; logs and run dirs stay in OUT_DIR.
set -u
cd "$(dirname "$0")/../.."
out=${1:-runs/results-conll}
shift || true
recipes=${*:-"conll2003 conll2003-top2"}
mkdir -p "$out"
data=$(cd ../shared/data && pwd)
threads=2
seeds=${SEEDS:-42}
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; threads $threads on both sides; seeds $seeds"
status=0

# the peer with the recipe's hyperparameters (read from the resolved recipe, so they cannot drift)
peer() { # run_name trainable seed
  local r="$out/$1/recipe.lua" get
  get() { build/pft -e "local t=dofile('$r') print($1)"; }
  python3 bench/conll2003/peer_train.py --model models/all-MiniLM-L6-v2 --data "$data/conll2003" \
    $( [ -n "$(get "t.data.train.limit or ''")" ] && echo --limit "$(get t.data.train.limit)" ) \
    --epochs "$(get t.train.epochs)" --lr "$(get t.optim.lr)" --batch-size "$(get t.data.batch_size)" \
    --max-length "$(get t.model.max_length)" --warmup "$(get t.lr_schedule.warmup)" --trainable "$2" \
    --seed "$3" --threads $threads >"$out/peer-$1.log" 2>&1
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "$1 torch: FAILED (exit $rc); the end of $out/peer-$1.log:"; tail -5 "$out/peer-$1.log" | sed 's/^/  /'
    status=1; return
  fi
  echo "$1 torch: $(grep '^peer: test' "$out/peer-$1.log")"
}

for seed in $seeds; do
  for r in $recipes; do
    name="$r-seed$seed"
    rm -rf "${out:?}/$name"
    PFT_THREADS=$threads build/pft train "recipes/$r.lua" output.dir="$out/$name" train.seed="$seed" >"$out/$name.log" 2>&1
    rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "$name pft: FAILED (exit $rc); the end of $out/$name.log:"; tail -5 "$out/$name.log" | sed 's/^/  /'
      status=1; continue
    fi
    echo "$name pft: $(grep -o 'test ([a-z]* model): .*' "$out/$name.log")  $(grep -E '^(done:|stopped early)' "$out/$name.log")"
    case $r in
      conll2003) peer "$name" full "$seed" ;;
      conll2003-top2) peer "$name" top2 "$seed" ;;
    esac
  done
done
exit $status
