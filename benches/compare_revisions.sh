#!/usr/bin/env bash
# The cost of a change, measured in one run: builds the release benches of BASE (a git
# revision, checked out as a worktree under target/compare/) and of the working tree, then runs
# every bench of both sides alternately, in blocks (A B B A A B ...), so that drift and the
# other tenants of a shared machine land on both sides alike. Each bench prints its own medians
# and p99s against its own baseline; compare the two sides' lines of the same block order.
#
# Usage: benches/compare_revisions.sh BASE [BLOCKS] [BENCH...]
#   BLOCKS  blocks per side (default 3)
#   BENCH   bench names (default: every bench both sides have)
# Output: target/compare/<sha>.log, one section per (block, side, bench), and the same on stdout.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
base=$(git -C "$root" rev-parse "${1:?usage: compare_revisions.sh BASE [BLOCKS] [BENCH...]}")
blocks=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
wanted=("$@")
tree="$root/target/compare/$base"
if [ ! -d "$tree" ]; then
  mkdir -p "$root/target/compare"
  git -C "$root" worktree add -q --detach "$tree" "$base"
fi

# The bench executables of the crate at $1, one "name path" line each.
executables() {
  (cd "$1" && cargo bench --no-run --message-format=json 2>/dev/null) | /usr/bin/python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and "bench" in m["target"]["kind"] and m.get("executable"):
        print(m["target"]["name"], m["executable"])
'
}

declare -A before after
while read -r name path; do before[$name]=$path; done < <(executables "$tree")
while read -r name path; do after[$name]=$path; done < <(executables "$root")
if [ ${#wanted[@]} -eq 0 ]; then
  for name in "${!after[@]}"; do [ -n "${before[$name]:-}" ] && wanted+=("$name"); done
fi
log="$root/target/compare/$base.log"
: > "$log"
run_side() { # side name
  local side=$1 name=$2 exe
  if [ "$side" = before ]; then exe=${before[$name]}; else exe=${after[$name]}; fi
  echo "=== block $block, $side ($([ "$side" = before ] && echo "${base:0:10}" || echo working tree)), $name" | tee -a "$log"
  "$exe" --bench 2>&1 | tee -a "$log"
}
for block in $(seq 1 "$blocks"); do
  # Alternate which side goes first, so neither always runs on a warmer machine.
  if (( block % 2 )); then order=(before after); else order=(after before); fi
  for name in "${wanted[@]}"; do
    for side in "${order[@]}"; do run_side "$side" "$name"; done
  done
done
echo "log: $log"
