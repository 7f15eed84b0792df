#!/usr/bin/env bash
# fetch-cjson.sh DIR: puts cJSON.c and cJSON.h from Debian's cjson source package (the version of the
# installed libcjson-dev, Debian's patches applied) into DIR, so that the fuzz build compiles cJSON with
# the same sanitizers and coverage as pft's own code. The source is fetched at build time, never kept in
# the repository. apt runs on a private sources list, lists and cache under a temporary directory: the
# machine's apt configuration is not touched (no deb-src entry is added to it), and no root is needed
# beyond what apt itself needs to download.
#
# Writes DIR/link.txt: empty when cJSON.c is the fetched source, "-lcjson" when the fetch failed (no
# network, no apt): then DIR/cJSON.c is an empty stub, the system libcjson (not instrumented) is linked,
# and a warning says so. Remove DIR to try again.
set -u
dir=$1
mkdir -p "$dir" && dir=$(cd "$dir" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fallback() {
  echo "fetch-cjson: WARNING: $1; the fuzz build links the system libcjson (not instrumented)" >&2
  echo "/* fetch-cjson.sh could not fetch Debian's cjson source ($1): the system libcjson is linked */" >"$dir/cJSON.c"
  echo "-lcjson" >"$dir/link.txt"
  exit 0
}

command -v apt-get >/dev/null || fallback "no apt-get"
command -v dpkg-source >/dev/null || fallback "no dpkg-source (package dpkg-dev)"
# deb-src entries for the mirrors this machine's apt already uses (its deb entries, turned into
# deb-src), in a private sources directory: nothing of the machine's apt configuration changes
mkdir -p "$tmp/parts"
: >"$tmp/sources.list"
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && sed -E 's/^Types:.*/Types: deb-src/' "$f" >"$tmp/parts/$(basename "$f")"
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -f "$f" ] && sed -nE 's/^deb(\s)/deb-src\1/p' "$f" >>"$tmp/sources.list"
done
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/src"
apt_opts=(-q -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=$tmp/parts"
          -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o "Debug::NoLocking=1")
[ "$(id -u)" = 0 ] && apt_opts+=(-o "APT::Sandbox::User=root") # the private dirs are root's
apt-get "${apt_opts[@]}" update >"$tmp/update.log" 2>&1 || { cat "$tmp/update.log" >&2; fallback "apt-get update failed"; }

# the installed libcjson-dev's version when apt still has it, else the newest in the suite
want=$(dpkg-query -W -f='${source:Version}' libcjson-dev 2>/dev/null)
cd "$tmp/src"
if ! { [ -n "$want" ] && apt-get "${apt_opts[@]}" source --download-only "cjson=$want" >"$tmp/source.log" 2>&1; }; then
  apt-get "${apt_opts[@]}" source --download-only cjson >"$tmp/source.log" 2>&1 ||
    { cat "$tmp/source.log" >&2; fallback "apt-get source cjson failed"; }
fi
dsc=$(ls "$tmp"/src/cjson_*.dsc 2>/dev/null | head -1)
[ -n "$dsc" ] || fallback "no cjson .dsc downloaded"
dpkg-source -q -x "$dsc" "$tmp/src/cjson" >"$tmp/unpack.log" 2>&1 || { cat "$tmp/unpack.log" >&2; fallback "dpkg-source -x failed"; }
[ -f "$tmp/src/cjson/cJSON.c" ] && [ -f "$tmp/src/cjson/cJSON.h" ] || fallback "cJSON.c not in the source package"

mkdir -p "$dir/include/cjson"
cp "$tmp/src/cjson/cJSON.h" "$dir/include/cjson/cJSON.h"
cp "$tmp/src/cjson/cJSON.h" "$dir/include/cJSON.h"
basename "$dsc" .dsc >"$dir/VERSION"
: >"$dir/link.txt"
cp "$tmp/src/cjson/cJSON.c" "$dir/cJSON.c.tmp" && mv "$dir/cJSON.c.tmp" "$dir/cJSON.c" # last: make's target
echo "fetch-cjson: $(cat "$dir/VERSION") from Debian's source package -> $dir/cJSON.c"
