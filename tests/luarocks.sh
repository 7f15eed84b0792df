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
if (cd "$work" && luarocks make --tree "$tree" pft-scm-1.rockspec) >"$tree/build.log" 2>&1; then ok; else
  bad "luarocks make failed"; tail -20 "$tree/build.log"; fi

[ -x "$tree/bin/pft" ] && ok || bad "no pft binary in the tree"
out=$("$tree/bin/pft" docs/examples/spirals.lua 2>&1)
if echo "$out" | grep -q "training accuracy 100.0%\|training accuracy 9[5-9]"; then ok; else bad "tree's pft did not train: $out"; fi
out=$(cd /tmp && luajit -e "package.path='$tree/share/lua/5.1/?.lua;$tree/share/lua/5.1/?/init.lua;'..package.path
  package.cpath='$tree/lib/lua/5.1/?.so;'..package.cpath" "$OLDPWD/docs/examples/spirals.lua" 2>&1)
if echo "$out" | grep -q "training accuracy 100.0%\|training accuracy 9[5-9]"; then ok; else bad "plain luajit + require 'pft' did not train: $out"; fi
out=$("$tree/bin/pft" --version 2>&1) && echo "$out" | grep -q "^pft " && ok || bad "pft --version: $out"
out=$(cd /tmp && "$tree/bin/pft" ls 2>&1) && echo "$out" | grep -q "^sst2-top2 " && ok || bad "the tree's pft ls finds no shipped recipes: $out"
echo "luarocks: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
