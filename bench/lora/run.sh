#!/usr/bin/env bash
# bench/lora: LoRA fine-tuning on SST-2 end to end, pft (recipes/sst2-lora.lua) against PyTorch +
# transformers + PEFT (bench/lora/peer_lora.py) with the recipe's hyperparameters, read from the resolved
# recipe of the pft run (so they cannot drift): lr, batch size, max_length, epochs, warm-up, train limit,
# weight decay, grad clip, LoRA r / alpha / dropout / targets. Per seed pft then the peer (alternating),
# 2 threads each, same seed.
# Usage: [SEEDS="42 43"] [LIMIT=N] [EPOCHS=N] [OUT_DIR=runs/lora] [BUILD=build] bash bench/lora/run.sh
#   (from anywhere). LIMIT / EPOCHS override data.train.limit / train.epochs on both sides (reduced runs:
#   LIMIT=400 EPOCHS=1 SEEDS=42). BUILD: the directory holding the pft binary. Each pft run gets a fresh
#   cache directory (PFT_CACHE: tokenized splits and the activation cache, removed after the run), so no
#   run reads what an earlier one computed; WARM_CACHE=1 keeps pft's usual cache directory instead.
# Prints per seed both sides' test accuracy (best dev epoch's model), wall time (the whole process, timed
# here the same way for both; in parentheses what each reports for training + evaluation + test),
# trainable parameters and optimizer memory (pft: summary.json optimizer_bytes; the peer: AdamW's 8 bytes
# per trainable parameter); then the means, `LoRA SST-2 wall: peer X s pft Y s ratio R` (R = X / Y: > 1
# means pft is faster) and `test accuracy mean: pft A peer B`. Logs and run dirs stay in OUT_DIR.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
pft=$BUILD/pft
out=${OUT_DIR:-runs/lora}
seeds=${SEEDS:-"42 43"}
threads=2
model=models/all-MiniLM-L6-v2
data=$(cd ../shared/data && pwd)
mkdir -p "$out"
[ -x "$pft" ] || { echo "bench/lora: no $pft (make BUILD=$BUILD)"; exit 1; }
echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g'), $(nproc) cores; threads $threads on both sides; seeds $seeds"
python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, " transformers", transformers.__version__, " peft", peft.__version__)'
overrides=()
[ -n "${LIMIT:-}" ] && overrides+=("data.train.limit=$LIMIT")
[ -n "${EPOCHS:-}" ] && overrides+=("train.epochs=$EPOCHS")
[ ${#overrides[@]} -gt 0 ] && echo "reduced run: ${overrides[*]} (both sides)"

now() { date +%s.%N; }
mean() { printf '%s\n' "$@" | awk '{s += $1} END {printf "%.4f", NR ? s / NR : 0}'; }
kib() { awk -v b="$1" 'BEGIN {printf "%.1f KiB", b / 1024}'; }
field() { echo "$1" | sed -n "s|.*$2 \([0-9.]*\).*|\1|p"; } # the number after $2 in line $1
# a field of RUN/summary.json (dotted path), or empty
summary() { "$pft" -e "local f = io.open('$1/summary.json') local t = require('cjson').decode(f:read('*a'))
  for k in ('$2'):gmatch('[^.]+') do t = type(t) == 'table' and t[k] or nil end print(t == nil and '' or t)"; }

status=0
pft_acc=() peer_acc=() pft_wall=() peer_wall=()
for seed in $seeds; do
  run="$out/pft-$seed"
  rm -rf "${run:?}"
  # a cold cache per run (tokenized splits, activation cache), as the peer starts from nothing each run
  if [ "${WARM_CACHE:-0}" = 1 ]; then cache=${PFT_CACHE:-}; else cache="$run.cache"; rm -rf "${cache:?}"; fi
  t0=$(now)
  PFT_CACHE=$cache PFT_THREADS=$threads "$pft" train recipes/sst2-lora.lua output.dir="$run" train.seed="$seed" "${overrides[@]}" \
    >"$out/pft-$seed.log" 2>&1
  rc=$?
  t1=$(now)
  [ "${WARM_CACHE:-0}" = 1 ] || rm -rf "${cache:?}"
  if [ "$rc" -ne 0 ] || [ ! -f "$run/summary.json" ]; then
    echo "seed $seed pft: FAILED (exit $rc); the end of $out/pft-$seed.log:"
    tail -5 "$out/pft-$seed.log" | sed 's/^/  /'
    status=1
    continue
  fi
  pw=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
  pacc=$(summary "$run" test.accuracy) pdev=$(summary "$run" best.value) pself=$(summary "$run" wall_s)
  ptr=$(summary "$run" trainable_params) pob=$(summary "$run" optimizer_bytes)
  # the training steps' rate, from the last progress line (summary.json's tokens_per_s divides by a time
  # that includes the dev evaluations and the activation cache's passes)
  ptps=$(grep -o '[0-9]* tok/s' "$out/pft-$seed.log" | tail -1 | awk '{print $1}')
  echo "seed $seed pft:  test accuracy $(printf '%.4f' "$pacc")  best dev $(printf '%.4f' "$pdev")  wall $pw s ($(printf '%.1f' "$pself") s)" \
       " train tokens/s ${ptps:-?}  trainable $ptr  optimizer $(kib "$pob")"

  # the peer, with the resolved recipe's hyperparameters
  r="$run/recipe.lua"
  # shellcheck disable=SC2046
  set -- $("$pft" -e "local t = dofile('$r') local l = t.adapters.lora
    assert(t.optim.name == 'adamw' and t.lr_schedule.name == 'linear' and (t.train.grad_accum or 1) == 1,
      'bench/lora: the peer runs AdamW, a linear schedule and no accumulation only')
    print(t.optim.lr, t.data.train.limit or 0, t.train.epochs, t.data.batch_size, t.model.max_length,
      t.lr_schedule.warmup, t.optim.weight_decay, t.train.grad_clip, l.r, l.alpha, l.dropout, table.concat(l.targets, ','))")
  if [ $# -ne 12 ]; then
    echo "seed $seed peer: could not read the hyperparameters from $r"
    status=1
    continue
  fi
  lr=$1 limit=$2 epochs=$3 bs=$4 ml=$5 warm=$6 wd=$7 clip=$8 lr_r=$9 lr_alpha=${10} lr_drop=${11} targets=${12}
  [ "$limit" = 0 ] && limit=
  t0=$(now)
  python3 bench/lora/peer_lora.py --model $model --data "$data/sst2" ${limit:+--limit $limit} --epochs "$epochs" \
    --lr "$lr" --batch-size "$bs" --max-length "$ml" --warmup "$warm" --weight-decay "$wd" --grad-clip "$clip" \
    --r "$lr_r" --alpha "$lr_alpha" --dropout "$lr_drop" --targets "$targets" --seed "$seed" --threads $threads \
    >"$out/peer-$seed.log" 2>&1
  rc=$?
  t1=$(now)
  line=$(grep '^peer: test' "$out/peer-$seed.log")
  if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
    echo "seed $seed peer: FAILED (exit $rc); the end of $out/peer-$seed.log:"
    tail -5 "$out/peer-$seed.log" | sed 's/^/  /'
    status=1
    continue
  fi
  tw=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
  tacc=$(field "$line" 'test accuracy') tdev=$(field "$line" 'best dev') tself=$(field "$line" wall)
  ttps=$(field "$line" 'train tokens/s') ttr=$(field "$line" trainable)
  case $ttr in ''|*[!0-9]*) echo "seed $seed peer: cannot read its line: $line"; status=1; continue ;; esac
  echo "seed $seed peer: test accuracy $tacc  best dev $tdev  wall $tw s ($tself s)  train tokens/s $ttps  trainable $ttr" \
       " optimizer $(kib $((8 * ttr)))  (lr $lr, batch $bs, max_length $ml, epochs $epochs, warm-up $warm, limit ${limit:-none})"
  pft_acc+=("$pacc") peer_acc+=("$tacc") pft_wall+=("$pw") peer_wall+=("$tw")
done

if [ ${#pft_acc[@]} -gt 0 ]; then
  pwm=$(mean "${pft_wall[@]}") twm=$(mean "${peer_wall[@]}")
  echo "means over ${#pft_acc[@]} seed(s) with both sides:"
  echo "LoRA SST-2 wall: peer $(printf '%.1f' "$twm") s pft $(printf '%.1f' "$pwm") s ratio $(awk -v a="$twm" -v b="$pwm" 'BEGIN {printf "%.2f", a / b}')"
  echo "test accuracy mean: pft $(mean "${pft_acc[@]}") peer $(mean "${peer_acc[@]}")"
fi
exit $status
