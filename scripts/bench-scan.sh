#!/usr/bin/env bash
# Measures the imaging study scan rate (instances per second) of ferry-core
# beside dcmdump (DCMTK) and pydicom reading the same headers.
#
# Usage: scripts/bench-scan.sh [INSTANCES]   (default 10000)
# Needs python3 with pydicom and dcmdump; writes about 40 KB per instance to
# a temporary folder, removed at exit. Each tool reads the study once to warm
# the page cache, then once timed.
set -euo pipefail

count="${1:-10000}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ferry-target}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "generating $count instances in $work ..." >&2
python3 "$repo/scripts/make-test-study.py" "$work" --bench "$count"
study="$work/bench"

cargo build -q -p ferry-core --example study_scan
scanner="$CARGO_TARGET_DIR/debug/examples/study_scan"

seconds() { # prints the wall-clock seconds of a command
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

rate() { printf '%.0f' "$(echo "$count / $1" | bc -l)"; }

dcmdump_all() {
    find "$study" -type f -print0 | xargs -0 dcmdump -q -M +sb 7fe0,0010 >/dev/null
}

pydicom_all() {
    python3 - "$study" <<'PY'
import os, sys
import pydicom
for root, _, files in os.walk(sys.argv[1]):
    for name in files:
        pydicom.dcmread(os.path.join(root, name), stop_before_pixels=True)
PY
}

"$scanner" "$study" >/dev/null
ferry_all=$(seconds "$scanner" "$study")
ferry_one=$(seconds "$scanner" "$study" 1)
dcmdump_all
dcmdump_s=$(seconds dcmdump_all)
pydicom_s=$(seconds pydicom_all)

printf '| Reader | Threads | Seconds | Instances per second |\n'
printf '|---|---|---|---|\n'
printf '| ferry-core study::scan (dicom-object %s) | %s | %.2f | %s |\n' "0.10.1" "$(nproc)" "$ferry_all" "$(rate "$ferry_all")"
printf '| ferry-core study::scan | 1 | %.2f | %s |\n' "$ferry_one" "$(rate "$ferry_one")"
printf '| dcmdump -M +sb 7fe0,0010 (%s) | 1 | %.2f | %s |\n' "$(dcmdump --version | head -1 | awk '{print $2, $3}')" "$dcmdump_s" "$(rate "$dcmdump_s")"
printf '| pydicom %s dcmread(stop_before_pixels=True) | 1 | %.2f | %s |\n' "$(python3 -c 'import pydicom; print(pydicom.__version__)')" "$pydicom_s" "$(rate "$pydicom_s")"
