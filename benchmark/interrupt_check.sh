#!/usr/bin/env bash
# Interrupt `make reproduce` with SIGINT, SIGTERM and SIGKILL at different moments, run it again, and check that
# it finishes, redoes no stage that had finished, and writes the tables of an uninterrupted run, byte for byte.
#
#   bash benchmark/interrupt_check.sh [PROFILE] [WORKDIR] [SECONDS...]
#
# Two clones of this repository's HEAD under WORKDIR (default /tmp/interrupt-check) share this checkout's .venv
# (stages run `python -m` from the clone's root, so they import the clone's code). Clone `a` runs the profile once;
# clone `b` is interrupted (SIGINT, SIGTERM, SIGKILL, sent by `timeout` to the whole process group, as a terminal's
# Ctrl-C or a job scheduler would) after the given seconds of each attempt (default 45 90 60), then runs to the end.
# Exit 0 when every check passes; each check prints one line.
set -euo pipefail
PROFILE=${1:-smoke}
WORK=${2:-/tmp/interrupt-check}
DELAYS=("${3:-45}" "${4:-90}" "${5:-60}")
SIGNALS=(INT TERM KILL)
REPO=$(git rev-parse --show-toplevel)
[ -x "$REPO/.venv/bin/python" ] || { echo "error: $REPO/.venv missing: run make setup first" >&2; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK"
# The reference CSVs sit beside the repository (../shared); give the clones the same neighbour.
[ -e "$REPO/../shared" ] && ln -s "$(cd "$REPO/../shared" && pwd)" "$WORK/shared"
for c in a b; do
  git clone -q "$REPO" "$WORK/$c"
  ln -s "$REPO/.venv" "$WORK/$c/.venv"
  mkdir -p "$WORK/$c/.stamps" && touch "$WORK/$c/.stamps/venv"
done
report_dir() { "$REPO/.venv/bin/python" - "$1" "$PROFILE" <<'PY'
import sys, yaml
print(yaml.safe_load(open(sys.argv[1] + "/params.yaml"))["profiles"][sys.argv[2]]["report_dir"])
PY
}
# The profile's stages recorded in dvc.lock (the committed lock holds other profiles' stages only).
locked() { "$REPO/.venv/bin/python" - "$1" "$PROFILE" <<'PY'
import sys, yaml, pathlib
p = pathlib.Path(sys.argv[1]) / "dvc.lock"
stages = (yaml.safe_load(p.read_text()) or {}).get("stages", {}) if p.is_file() else {}
print("\n".join(sorted(s for s in stages if f"@{sys.argv[2]}" in s)))
PY
}
run() { (cd "$WORK/$1" && make reproduce PROFILE="$PROFILE" >> "$WORK/$1.log" 2>&1); }

t0=$(date +%s)
run a || { echo "FAIL: the uninterrupted run failed (see $WORK/a.log)"; exit 1; }
echo "uninterrupted run: $(( $(date +%s) - t0 )) s"

fail=0
for i in 0 1 2; do
  sig=${SIGNALS[$i]}; delay=${DELAYS[$i]}
  before=$(locked "$WORK/b")
  start=$(date +%s)
  # -k 60: if the run has not stopped 60 s after the signal, KILL it (reported as exit 137: the signal was ignored).
  (cd "$WORK/b" && timeout -k 60 -s "$sig" "$delay" make reproduce PROFILE="$PROFILE" >> "$WORK/b.log" 2>&1) && rc=0 || rc=$?
  stopped=$(( $(date +%s) - start - delay ))
  after=$(locked "$WORK/b")
  echo "SIG$sig after ${delay} s: exit $rc, stopped ${stopped} s after the signal, finished stages $(echo -n "$before" | grep -c . || true) -> $(echo -n "$after" | grep -c . || true)"
  # A stage that had finished before this attempt must not have run in it (its log is older than the attempt).
  for s in $before; do
    log="$WORK/b/data/benchmark/$PROFILE/logs/$s.log"
    if [ -f "$log" ] && [ "$(stat -c %Y "$log")" -ge "$start" ]; then echo "FAIL: $s ran again after SIG$sig"; fail=1; fi
  done
  # Nothing half-written is left behind: no staging folders.
  if find "$WORK/b/data" -name '.staging-*' | grep -q .; then
    echo "note: staging folders left by SIG$sig (removed by the next run):"; find "$WORK/b/data" -name '.staging-*' | head -3
  fi
done
before=$(locked "$WORK/b")
start=$(date +%s)
run b || { echo "FAIL: the resumed run failed (see $WORK/b.log)"; exit 1; }
for s in $before; do
  log="$WORK/b/data/benchmark/$PROFILE/logs/$s.log"
  if [ -f "$log" ] && [ "$(stat -c %Y "$log")" -ge "$start" ]; then echo "FAIL: $s ran again in the final run"; fail=1; fi
done
echo "final run: $(( $(date +%s) - start )) s, reran none of the $(echo -n "$before" | grep -c . || true) finished stages: $([ $fail = 0 ] && echo yes || echo NO)"
ra=$(report_dir "$WORK/a"); rb=$(report_dir "$WORK/b")
# Tables: every CSV and Markdown table of the report (timings.json and logs hold wall times, so they differ).
if diff -r -q -x '*.json' -x '*.png' "$WORK/a/$ra" "$WORK/b/$rb"; then
  echo "tables byte-identical to the uninterrupted run's ($(find "$WORK/b/$rb" -name '*.csv' -o -name '*.md' | wc -l) files)"
else
  echo "FAIL: tables differ"; fail=1
fi
exit $fail
