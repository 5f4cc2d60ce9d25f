#!/usr/bin/env bash
# Measures the desktop app: launch to an interactive window, idle memory,
# and memory and UI responsiveness while 20 uploads run against the sandbox
# gateway. It runs tests/tests/desktop_bench.rs through scripts/test (a
# private D-Bus session, an unlocked gnome-keyring and Xvfb at 1280x800)
# and prints the lines that start with "bench:".
#
#   scripts/bench-desktop.sh
#
# The debug build is measured, as the end-to-end tests use it. The uploads
# write about 20 x 256 MiB into the gateway's store in a temporary folder
# at the 8 MiB/s cap the benchmark sets, so expect well under 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."

FERRY_DESKTOP_BENCH=1 scripts/test -p ferry-tests -E 'binary(desktop_bench)' --no-capture 2>&1 |
  grep '^bench:'
