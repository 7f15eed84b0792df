#!/usr/bin/env bash
# Issue 7's experiment-loop figures: one `pft sweep` against the same cells trained one after another with
# PyTorch + transformers (bench/experiments/peer_sweep.py), pft and the peer alternating, REPS times.
#
#   P3   the freeze-ratio study, bench/experiments/p3.lua: cells head, top1, top2, top3 (lr 1e-3, 1e-4,
#        1e-4, 1e-4: recipes/sweeps/sst2-freeze.lua), one seed, 3 epochs on the first 8,000 SST-2 training
#        rows, max_length 64, batch 32; dev scored after every epoch, the best epoch's model on test.
#   P3b  the linear probe alone, bench/experiments/p3b.lua: head, lr 1e-3, 10 epochs, the same rows.
#   Figure: peer wall / pft wall, each the whole process(es) from start to exit (imports, model loading,
#   tokenizing, training, every dev evaluation, the test split), median over REPS.
#
# Equal work (what the job is, on both sides): the same checkpoint (models/all-MiniLM-L6-v2), the same
# training rows, epochs, batch size, number of optimizer steps, max_length, learning rate, weight decay
# (off for biases and LayerNorm), linear warm-up 6% + linear decay, gradient clipping at 1.0, seed; the
# same trainable parameters (pft's presets: head = classifier only, pooler frozen; top_k = the top k
# encoder layers + pooler + classifier), frozen layers in eval mode (no dropout) on both sides; batches in
# a shuffled order padded to their longest row (pft: data.bucket=false); dev (6,735 rows) scored after each
# epoch and test (872 rows) once with the best epoch's model; 2 threads on each side (PFT_THREADS=2,
# torch.set_num_threads(2)). The shuffles differ (each side its own RNG), so accuracies agree only to
# within noise (goal: 1 point).
#
# The work each side really does:
#   peer: every cell computes the whole frozen prefix (embeddings + the frozen layers) again on every
#         training step and every dev evaluation (transformers has no activation cache; with no
#         trainable parameter below, autograd keeps no tape there), over padded batches; tokenizes every
#         batch with the fast tokenizer as it goes; reloads the checkpoint per cell.
#   pft:  validates every cell first (loads the model, tokenizes train/dev once into PFT_CACHE, fresh and
#         empty for every sweep: a cold figure), then -- with the frozen-prefix activation cache -- one
#         eval-mode encoder pass per split computes every boundary the cells need ([CLS]/pooled for head,
#         layer[5|4|3] in for top1-3), and each cell runs only its top layers from the cached states;
#         without the cache (CACHE=off, train.cache=false, or a pft that predates it) every cell
#         recomputes its frozen prefix on every step, as the peer does. pft skips padding positions in
#         either case. It also writes checkpoints, a best model and a final model (Hugging Face exports)
#         per cell and scores test with the exported best model, live; the peer keeps its best state in
#         memory.
#
# Usage (from anywhere; runs from the repository root):
#   bash bench/experiments/run.sh                                   # full size: P3 + P3b, REPS=1
#   LIMIT=800 EPOCHS=1 PROBE_EPOCHS=2 bash bench/experiments/run.sh # the reduced smoke run
# Environment: LIMIT (training rows, 8000), EPOCHS (P3, 3), PROBE_EPOCHS (P3b, 10), DEV_LIMIT (dev rows,
# default all 6,735), REPS (1), SEED (42), FIGS ("p3 p3b"), CACHE (on | off: pft with train.cache=false),
# PER_PROCESS (1: the peer runs one python process per cell), PFT (build/pft), OUT (runs/exp7-<time>).
# Logs, sweep directories and peer outputs stay in OUT.
set -u
cd "$(dirname "$0")/../.."
PFT=${PFT:-build/pft}
LIMIT=${LIMIT:-8000}
EPOCHS=${EPOCHS:-3}
PROBE_EPOCHS=${PROBE_EPOCHS:-10}
DEV_LIMIT=${DEV_LIMIT:-}
REPS=${REPS:-1}
SEED=${SEED:-42}
FIGS=${FIGS:-p3 p3b}
CACHE=${CACHE:-on}
PER_PROCESS=${PER_PROCESS:-0}
OUT=${OUT:-runs/exp7-$(date +%Y%m%d-%H%M%S)}
MODEL=models/all-MiniLM-L6-v2
threads=2
data=$(cd ../shared/data && pwd)

[ -x "$PFT" ] || { echo "run.sh: $PFT missing: make BUILD=$(dirname "$PFT")" >&2; exit 2; }
[ -f "$MODEL/config.json" ] || { echo "run.sh: $MODEL missing: make model" >&2; exit 2; }
mkdir -p "$OUT"
t_all=$(date +%s.%N)

echo "machine: $(lscpu | grep 'Model name' | sed 's/  */ /g;s/^Model name: *//'), nproc $(nproc)"
echo "threads: pft $threads (PFT_THREADS=$threads), peer $threads (torch.set_num_threads($threads));" \
  "torch $(python3 -c 'import torch, transformers; print(torch.__version__, "/ transformers", transformers.__version__)' 2>/dev/null)"
echo "job: $LIMIT training rows, P3 $EPOCHS epoch(s), P3b $PROBE_EPOCHS epoch(s), dev ${DEV_LIMIT:-all} rows, seed $SEED," \
  "max_length 64, batch 32; pft cache $CACHE; peer $([ "$PER_PROCESS" = 1 ] && echo 'one process per cell' || echo 'one process'); REPS $REPS; logs in $OUT"

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min; above ~0.3 something else is running and the walls are not clean)"
now() { date +%s.%N; }
secs() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
median() { python3 -c "import statistics, sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.1f}')" "$@"; }

# pft_sweep FIG REP -> runs one pft sweep into a fresh directory with a fresh cache; sets PFT_WALL
pft_sweep() {
  local fig=$1 rep=$2 epochs dir cache log
  [ "$fig" = p3 ] && epochs=$EPOCHS || epochs=$PROBE_EPOCHS
  dir="$OUT/$fig-pft-r$rep"
  log="$OUT/$fig-pft-r$rep.log"
  rm -rf "$dir"
  cache=$(mktemp -d "${TMPDIR:-/tmp}/pft-exp7-cache.XXXXXX")
  local over=("data.train.limit=$LIMIT" "train.epochs=$epochs" "train.seed=$SEED")
  [ -n "$DEV_LIMIT" ] && over+=("data.dev.limit=$DEV_LIMIT")
  [ "$CACHE" = off ] && over+=("train.cache=false")
  local t0 t1 rc
  t0=$(now)
  PFT_CACHE="$cache" PFT_THREADS=$threads "$PFT" sweep "bench/experiments/$fig.lua" "${over[@]}" --dir "$dir" >"$log" 2>&1
  rc=$?
  t1=$(now)
  rm -rf "$cache"
  if [ "$rc" -ne 0 ]; then
    echo "$fig pft (rep $rep): FAILED (exit $rc); the end of $log:"
    tail -8 "$log" | sed 's/^/  /'
    return 1
  fi
  PFT_WALL=$(secs "$t0" "$t1")
  echo "$fig pft (rep $rep): wall $PFT_WALL s  $(grep -c '^cell ' "$log") cells  ($dir)"
}

# peer_job FIG REP -> the peer's cells and job, read from the resolved recipes of pft's cells (so the two
# sides cannot drift); sets PEER_ARGS and PEER_CELLS
peer_job() {
  local fig=$1 rep=$2 dir="$OUT/$1-pft-r$2" c r line
  PEER_CELLS=()
  PEER_ARGS=""
  for c in $(python3 -c "import json, sys; print(' '.join(c['name'] for c in json.load(open(sys.argv[1]))['cells']))" "$dir/sweep.json"); do
    r="$dir/$c/recipe.lua"
    line=$("$PFT" -e "local t=dofile('$r')
      local s=t.schedule
      local name = s.preset == 'head' and 'head' or s.preset == 'full' and 'full' or s.preset == 'top_k' and ('top'..s.k) or ('?'..s.preset)
      print(name..'='..t.optim.lr..'/'..t.optim.weight_decay,
        '--limit '..(t.data.train.limit or '')..' --epochs '..t.train.epochs..' --batch-size '..t.data.batch_size..
        ' --max-length '..t.model.max_length..' --warmup '..t.lr_schedule.warmup..' --seed '..t.train.seed..
        (t.data.dev and t.data.dev.limit and (' --dev-limit '..t.data.dev.limit) or ''))")
    PEER_CELLS+=("${line%%$'\t'*}")
    local args=${line#*$'\t'}
    if [ -n "$PEER_ARGS" ] && [ "$args" != "$PEER_ARGS" ]; then
      echo "run.sh: $fig: cells differ in more than lr/wd/schedule ($args vs $PEER_ARGS); peer_sweep.py takes one job" >&2
      return 1
    fi
    PEER_ARGS=$args
  done
}

# peer_run FIG REP -> sets PEER_WALL
peer_run() {
  local fig=$1 rep=$2 log="$OUT/$1-peer-r$2.log" t0 t1 rc
  peer_job "$fig" "$rep" || return 1
  local pp=()
  [ "$PER_PROCESS" = 1 ] && pp=(--per-process)
  t0=$(now)
  # shellcheck disable=SC2086
  python3 bench/experiments/peer_sweep.py --model "$MODEL" --data "$data/sst2" $PEER_ARGS --threads $threads \
    "${pp[@]}" "${PEER_CELLS[@]}" >"$log" 2>&1
  rc=$?
  t1=$(now)
  if [ "$rc" -ne 0 ]; then
    echo "$fig peer (rep $rep): FAILED (exit $rc); the end of $log:"
    tail -8 "$log" | sed 's/^/  /'
    return 1
  fi
  PEER_WALL=$(secs "$t0" "$t1")
  echo "$fig peer (rep $rep): wall $PEER_WALL s  cells ${PEER_CELLS[*]}  ($PEER_ARGS)"
}

status=0
declare -A pft_walls peer_walls
for rep in $(seq 1 "$REPS"); do
  for fig in $FIGS; do
    if pft_sweep "$fig" "$rep" && peer_run "$fig" "$rep"; then
      pft_walls[$fig]="${pft_walls[$fig]:-} $PFT_WALL"
      peer_walls[$fig]="${peer_walls[$fig]:-} $PEER_WALL"
    else
      status=1
    fi
  done
done

echo
for fig in $FIGS; do
  [ -n "${pft_walls[$fig]:-}" ] || continue
  # shellcheck disable=SC2086
  p=$(median ${pft_walls[$fig]}); q=$(median ${peer_walls[$fig]})
  label=$([ "$fig" = p3 ] && echo P3 || echo P3b)
  n=$(echo ${pft_walls[$fig]} | wc -w)
  echo "$label wall: peer $q s  pft $p s  ratio $(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$q" "$p")" \
    "  (median of $n; pft$(printf ' %s' ${pft_walls[$fig]}) / peer$(printf ' %s' ${peer_walls[$fig]}))"
done

# per-cell accuracies side by side, from the last rep
echo
echo "per cell (rep $REPS): dev = best epoch's dev accuracy, test = that model's test accuracy"
printf '%-5s %-5s %9s %9s %9s %9s %7s %10s %10s %12s\n' fig cell "pft dev" "peer dev" "pft test" "peer test" "d test" "pft wall" "peer wall" trainable
for fig in $FIGS; do
  [ -f "$OUT/$fig-peer-r$REPS.log" ] || continue
  python3 - "$OUT/$fig-pft-r$REPS" "$OUT/$fig-peer-r$REPS.log" "$fig" <<'EOF'
import json, re, sys
d, log, fig = sys.argv[1:]
peer = {}
for line in open(log):
    m = re.match(r"^peer (\S+): dev ([0-9.]+) test ([0-9.]+) wall ([0-9.]+) s trainable (\d+)", line)
    if m:
        peer[m.group(1)] = m.groups()[1:]
for c in json.load(open(d + "/sweep.json"))["cells"]:
    s = json.load(open(f"{d}/{c['name']}/summary.json"))
    dev = s.get("best", {}).get("value")
    test = (s.get("test") or {}).get("accuracy")
    pd, pt, pw, ptr = peer.get(c["name"].split(",")[0], (None,) * 4)
    f = lambda x: "-" if x is None else f"{float(x):.4f}"
    dt = "-" if test is None or pt is None else f"{100 * (test - float(pt)):+.1f}"
    tr = f"{s.get('trainable_params')}" + ("" if ptr is None or int(ptr) == s.get("trainable_params") else f" vs {ptr}!")
    print(f"{fig:<5} {c['name']:<5} {f(dev):>9} {f(pd):>9} {f(test):>9} {f(pt):>9} {dt:>7} {s.get('wall_s', 0):>8.1f} s"
          f" {float(pw or 0):>8.1f} s {tr:>12}")
EOF
done
echo "(pft's per-cell wall is the cell's own run, without the up-front validation and the shared cache pass;"
echo " the P3/P3b walls above are whole processes)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "total: $(secs "$t_all" "$(now)") s"
exit $status
