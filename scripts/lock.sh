#!/usr/bin/env bash
# The one home of the lock files' recipe.
#   lock.sh UV           re-resolve requirements/*.txt from pyproject.toml, keeping every
#                        pin that still fits (UPGRADE=1: the newest releases instead)
#   lock.sh UV --check   fail (exit 1) when pyproject.toml and the lock files disagree
# --check compiles each lock again from a copy of itself and compares the pins, not the
# hashes, so a wheel uploaded later for a locked version does not turn it red.
set -euo pipefail
uv=$1 mode=${2:-}
lock=requirements/lock.txt dev_lock=requirements/dev.txt

compile() {  # compile OUT_LOCK OUT_DEV_LOCK
  local flags=(pip compile --quiet --generate-hashes --python-version 3.11
               --custom-compile-command "make lock")
  [ -n "${UPGRADE:-}" ] && flags+=(--upgrade)
  "$uv" "${flags[@]}" pyproject.toml -o "$1"
  "$uv" "${flags[@]}" pyproject.toml requirements/tools.in --extra test -c "$1" -o "$2"
}

if [ "$mode" != "--check" ]; then
  compile "$lock" "$dev_lock"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$lock" "$tmp/lock.txt"
cp "$dev_lock" "$tmp/dev.txt"
if ! compile "$tmp/lock.txt" "$tmp/dev.txt" 2>"$tmp/err"; then
  echo "liqmon: could not re-resolve the lock files to check them: $(tail -n 1 "$tmp/err")" >&2
  exit 3
fi
pins() { grep -E '^[A-Za-z0-9]' "$1" | sed 's/ *\\$//' | sort; }
status=0
for name in lock dev; do
  committed=requirements/$name.txt
  if ! diff <(pins "$committed") <(pins "$tmp/$name.txt") >"$tmp/diff"; then
    echo "liqmon: $committed does not match pyproject.toml; run 'make lock' and commit it" >&2
    sed 's/^/  /' "$tmp/diff" >&2
    status=1
  fi
done
exit $status
