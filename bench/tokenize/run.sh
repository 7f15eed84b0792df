#!/bin/sh
# Tokenizer benchmark: pft (C, batch API) against BertTokenizerFast (`tokenizers`, batch API), both single
# thread, on all of SST-2 train, alternating the two ROUNDS times. Run from the repository root:
#     sh bench/tokenize/run.sh [ROUNDS]
# Prints "sentences/s: pft X  tokenizers Y  ratio Z" (medians over the rounds).
set -e
ROUNDS=${1:-3}
MODEL=tests/fixtures/tokenizer/minilm
TSV=../shared/data/sst2/train.tsv
BIN=${TMPDIR:-/tmp}/pft_bench_tokenize
${CC:-cc} -std=c11 -O2 -Wall -Wextra -Icore core/ctx.c core/text.c bench/tokenize/bench_tokenize.c \
    -lutf8proc -lcjson -lm -o "$BIN"
export TOKENIZERS_PARALLELISM=false RAYON_NUM_THREADS=1 OMP_NUM_THREADS=1
P=""; T=""
i=0
while [ $i -lt "$ROUNDS" ]; do
    p=$("$BIN" "$MODEL" "$TSV" 5 | sed -n 's/^pft sentences\/s: \([0-9]*\).*/\1/p')
    t=$(python3 bench/tokenize/peer.py "$MODEL" "$TSV" 5 2>/dev/null | sed -n 's/^tokenizers sentences\/s: \([0-9]*\).*/\1/p')
    echo "round $((i + 1)): pft $p  tokenizers $t"
    P="$P $p"; T="$T $t"
    i=$((i + 1))
done
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
pm=$(median "$P"); tm=$(median "$T")
echo "sentences/s: pft $pm  tokenizers $tm  ratio $(awk -v a="$pm" -v b="$tm" 'BEGIN {printf "%.2f", a / b}')"
