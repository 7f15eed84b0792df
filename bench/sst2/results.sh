#!/usr/bin/env bash
# docs/results.md's figures: every shipped SST-2 recipe with the real pretrained model, and the same job
# with PyTorch + transformers for the full fine-tune and the top-2 schedule, pft and peer alternating.
# Usage: [SEED=42] [GROUP=1] bash bench/sst2/results.sh [OUT_DIR=runs/results] [recipes...]   (from the repository root)
# GROUP=1: the peer batches training rows by length (transformers' group_by_length; peer_train.py
# --group-by-length) instead of padding shuffled batches to their longest row.
# PRECISION=bf16: pft trains with train.precision = "bf16" and the peer with --bf16 (torch.autocast bfloat16).
# Prints one line per run; logs and run dirs stay in OUT_DIR.
set -u
cd "$(dirname "$0")/../.."
out=${1:-runs/results}
shift || true
recipes=${*:-"sst2 sst2-top2 sst2-head sst2-bitfit sst2-gradual sst2-llrd sst2-chainthaw"}
mkdir -p "$out"
data=$(cd ../shared/data && pwd)
threads=2
seed=${SEED:-42}
precision=${PRECISION:-fp32}
bf16=$([ "$precision" = bf16 ] && echo 1 || true)
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; threads $threads on both sides; seed $seed; precision $precision"

# the peer with the recipe's hyperparameters (read from the resolved recipe, so they cannot drift)
peer() { # name trainable
  local r="$out/$1/recipe.lua"
  local lr limit epochs bs ml warm
  lr=$(build/pft -e "local t=dofile('$r') print(t.optim.lr)")
  limit=$(build/pft -e "local t=dofile('$r') print(t.data.train.limit or '')")
  epochs=$(build/pft -e "local t=dofile('$r') print(t.train.epochs)")
  bs=$(build/pft -e "local t=dofile('$r') print(t.data.batch_size)")
  ml=$(build/pft -e "local t=dofile('$r') print(t.model.max_length)")
  warm=$(build/pft -e "local t=dofile('$r') print(t.lr_schedule.warmup)")
  local t0
  t0=$(date +%s.%N)
  python3 bench/sst2/peer_train.py --model models/all-MiniLM-L6-v2 --data "$data/sst2" ${limit:+--limit $limit} \
    --epochs "$epochs" --lr "$lr" --batch-size "$bs" --max-length "$ml" --warmup "$warm" --trainable "$2" \
    --seed "$seed" --threads $threads ${GROUP:+--group-by-length} ${bf16:+--bf16} >"$out/peer-$1.log" 2>&1
  local rc=$? wall
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$rc" -ne 0 ]; then
    echo "$1 torch: FAILED (exit $rc); the end of $out/peer-$1.log:"
    tail -5 "$out/peer-$1.log" | sed 's/^/  /'
    status=1
    return
  fi
  echo "$1 torch: $(grep '^peer: test' "$out/peer-$1.log")  process wall $wall s"
}

status=0

for r in $recipes; do
  rm -rf "${out:?}/$r"
  t0=$(date +%s.%N)
  PFT_THREADS=$threads build/pft train "recipes/$r.lua" output.dir="$out/$r" train.seed="$seed" train.precision="$precision" >"$out/$r.log" 2>&1
  rc=$?
  wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$rc" -ne 0 ]; then
    echo "$r pft: FAILED (exit $rc); the end of $out/$r.log:"
    tail -5 "$out/$r.log" | sed 's/^/  /'
    status=1
    continue
  fi
  acc=$(grep -o 'test ([a-z]* model): acc [0-9.]*' "$out/$r.log" | grep -o '[0-9.]*$')
  done_line=$(grep -E '^(done:|stopped early)' "$out/$r.log")
  tps=$(grep -o '[0-9]* tok/s' "$out/$r.log" | tail -1)
  echo "$r pft: test accuracy $acc  $tps  $done_line  process wall $wall s"
  case $r in
    sst2) peer sst2 full ;;
    sst2-top2) peer sst2-top2 top2 ;;
  esac
done
exit $status
