#!/usr/bin/env bash
# The device returns at most 8 files from $OUT (and none deeper than 2 folders). With more, this packs them all
# into one archive in their place, so nothing is left behind:
#
#   bash benchmarks/pack_out.sh DIR ARCHIVE   # ARCHIVE: a name ending in .tgz (gzip) or .tar (run dirs already packed)
set -u
dir=${1:?usage: pack_out.sh DIR ARCHIVE}
archive=${2:?usage: pack_out.sh DIR ARCHIVE}
n_files=$(find "$dir" -type f | wc -l)
[ "$n_files" -gt 8 ] || exit 0
case $archive in *.tgz) flags=czf ;; *) flags=cf ;; esac
tmp=$(mktemp -d)
tar $flags "$tmp/$archive" -C "$dir" . && find "$dir" -mindepth 1 -delete && mv "$tmp/$archive" "$dir/$archive" \
  && echo "($n_files files under $dir packed into $dir/$archive)"
rm -rf "$tmp"
