#!/usr/bin/env bash
# Uploads and downloads one large file through the sandbox gateway's store
# with Ferry (the engine at default settings), curl (one presigned PUT and
# one presigned GET), rclone and aws s3 cp (the sandbox's S3 credentials).
# Each tool runs under farm-bench paired with curl (tool, curl, tool, curl,
# ...), so that the ratio to curl stays meaningful on a shared machine.
# The script prints a Markdown table: median throughput of RUNS runs, median
# peak RSS and CPU seconds, and the median paired share of curl's speed.
#
# Usage: scripts/bench-transfer.sh [SIZE_MIB]   (default 4096; 2048 when
# the disk is short). Needs about 8 × SIZE free in BENCH_DIR (default a
# new folder in /var/tmp), removed at exit. RUNS=3 by default; TOOLS
# chooses the tools besides curl (default "ferry rclone aws").
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ferry-target}"
runs="${RUNS:-3}"
tools=" ${TOOLS:-ferry rclone aws} "
wants() { [[ "$tools" == *" $1 "* ]]; }
work="$(mktemp -d "${BENCH_DIR:-/var/tmp}/ferry-bench.XXXXXX")"
sandbox_pid=""
cleanup() {
    if [ -n "$sandbox_pid" ]; then kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_mib=$(( $(df -Pk "$work" | awk 'NR==2 {print $4}') / 1024 ))
size_mib="${1:-}"
if [ -z "$size_mib" ]; then
    size_mib=4096
    if [ "$free_mib" -lt $((8 * 4096 + 1024)) ]; then size_mib=2048; fi
fi
if [ "$free_mib" -lt $((8 * size_mib + 1024)) ]; then
    echo "only $free_mib MiB free in $work; $((8 * size_mib + 1024)) MiB needed for $size_mib MiB" >&2
    exit 1
fi

echo "building release binaries ..." >&2
cargo build -q --release -p ferry-gateway
cargo build -q --release -p ferry-core --example bench_transfer
gateway="$CARGO_TARGET_DIR/release/ferry-gateway"
ferry="$CARGO_TARGET_DIR/release/examples/bench_transfer"

echo "writing a $size_mib MiB file ..." >&2
source_file="$work/study.bin"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >"$source_file"
expected="$(sha256sum "$source_file" | cut -d' ' -f1)"

"$gateway" sandbox --data-dir "$work/sandbox" --listen 127.0.0.1:0 --auto-login dr-rivera:pat-001 \
    >"$work/sandbox.out" 2>"$work/sandbox.log" &
sandbox_pid=$!
for _ in $(seq 100); do
    grep -q '^store-secret-access-key:' "$work/sandbox.out" 2>/dev/null && break
    sleep 0.1
done
field() { sed -n "s/^$1: //p" "$work/sandbox.out"; }
fhir="$(field fhir)"
endpoint="$(field store-endpoint)"
region="$(field store-region)"
bucket="$(field store-bucket)"
export AWS_ACCESS_KEY_ID="$(field store-access-key-id)"
export AWS_SECRET_ACCESS_KEY="$(field store-secret-access-key)"
export AWS_DEFAULT_REGION="$region"
export RCLONE_CONFIG_SANDBOX_TYPE=s3 RCLONE_CONFIG_SANDBOX_PROVIDER=Other RCLONE_CONFIG_SANDBOX_ENV_AUTH=true
export RCLONE_CONFIG_SANDBOX_ENDPOINT="$endpoint" RCLONE_CONFIG_SANDBOX_REGION="$region"
aws_cli=/usr/bin/aws
[ -x "$aws_cli" ] || aws_cli="$(command -v aws)"

results="$work/results"; mkdir -p "$results"
download_dir="$work/down"; mkdir -p "$download_dir"

check() { # compares a downloaded file with the source
    local actual
    actual="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$actual" != "$expected" ]; then echo "$1 differs from the source" >&2; exit 1; fi
    rm -f "$1"
}

put_url="$("$ferry" presign PUT "$endpoint" "$region" "$bucket" bench/curl.bin)"
get_url="$("$ferry" presign GET "$endpoint" "$region" "$bucket" bench/curl.bin)"
curl_up="curl -sS --fail -T $source_file -o /dev/null $put_url"
curl_down="curl -sS --fail -o $download_dir/curl.bin $get_url"
# The object curl downloads, and the one it overwrites in each upload run.
curl -sS --fail -T "$source_file" -o /dev/null "$put_url"

# Runs "$@" (A) and curl (B) in turn under farm-bench, RUNS times each;
# the report goes to $results/NAME-DIRECTION.
pair() {
    local name="$1" direction="$2"; shift 2
    local baseline="$curl_up"
    [ "$direction" = down ] && baseline="$curl_down"
    echo "$name $direction ..." >&2
    farm-bench -n "$runs" --warmup 0 --timeout 3600 --vs "$baseline" -- "$@" >"$results/$name-$direction" 2>&1 || {
        cat "$results/$name-$direction" "$work/commands.log" >&2 2>/dev/null; exit 1; }
    if grep -q ' exit [^0]' "$results/$name-$direction"; then
        cat "$results/$name-$direction" "$work/commands.log" >&2 2>/dev/null; exit 1
    fi
}

ferry_read=""
if wants ferry; then
    pair ferry up sh -c "exec $ferry upload $fhir $source_file $work/up.sqlite >>$work/ferry-up.out 2>>$work/commands.log"
    document_id="$(tail -1 "$work/ferry-up.out")"
    pair ferry down "$ferry" download "$fhir" "$document_id" "$download_dir" "$work/down.sqlite"
    check "$download_dir/$(basename "$source_file")"
    check "$download_dir/curl.bin"
    # Bytes of the source file read by one upload, from its pread64 calls.
    # One trace file per thread (-ff), so that no call is split into an
    # "unfinished" and a "resumed" line, which only the first names the file.
    mkdir -p "$work/strace"
    strace -ff -y -e trace=pread64,read -o "$work/strace/trace" "$ferry" upload "$fhir" "$source_file" "$work/strace.sqlite" >/dev/null
    ferry_read=$(cat "$work/strace"/trace.* | grep -F "<$source_file>" | sed -n 's/.*= \([0-9]\+\)$/\1/p' | awk '{s += $1} END {printf "%.0f", s}')
    # The four objects Ferry uploaded (uploads/ in the bucket) take 4 × SIZE
    # of disk that the later tools need.
    env -u AWS_CA_BUNDLE rclone purge "sandbox:$bucket/uploads"
fi

if wants rclone; then
    pair rclone up env -u AWS_CA_BUNDLE rclone copyto --ignore-times "$source_file" "sandbox:$bucket/bench/rclone.bin"
    pair rclone down env -u AWS_CA_BUNDLE rclone copyto --ignore-times "sandbox:$bucket/bench/rclone.bin" "$download_dir/rclone.bin"
    check "$download_dir/rclone.bin"
    env -u AWS_CA_BUNDLE rclone deletefile "sandbox:$bucket/bench/rclone.bin"
fi

if wants aws; then
    pair aws up "$aws_cli" --endpoint-url "$endpoint" s3 cp --only-show-errors "$source_file" "s3://$bucket/bench/aws.bin"
    pair aws down "$aws_cli" --endpoint-url "$endpoint" s3 cp --only-show-errors "s3://$bucket/bench/aws.bin" "$download_dir/aws.bin"
    check "$download_dir/aws.bin"
fi

# Prints the median of farm-bench's row LABEL in the report FILE.
median_of() { awk -v label="$2" 'index($0, label) == 1 { print $(NF - 1) }' "$1"; }

echo
echo "$size_mib MiB file, median of $runs runs, each paired with a curl run; $(nproc) cores; loopback; $("$aws_cli" --version | cut -d' ' -f1), $(rclone version | head -1), $(curl --version | head -1 | cut -d' ' -f1-2)."
echo
echo "| tool | direction | MiB/s | share of curl | peak RSS (MiB) | CPU s |"
echo "|---|---|---:|---:|---:|---:|"
row() { # name label wall peak cpu ratio
    awk -v n="$1" -v d="$2" -v s="$3" -v r="$4" -v c="$5" -v q="$6" -v m="$size_mib" \
        'BEGIN { printf "| %s | %s | %.0f | %s | %.0f | %.1f |\n", n, d, m / s, (q == "") ? "100 %" : sprintf("%.0f %%", 100 / q), r, c }'
}
first=""
for tool in ferry rclone aws; do
    wants "$tool" || continue
    name="$tool"; [ "$tool" = aws ] && name="aws s3 cp"
    for direction in up down; do
        report="$results/$tool-$direction"
        label=upload; [ "$direction" = down ] && label=download
        row "$name" "$label" "$(median_of "$report" 'A wall s')" "$(median_of "$report" 'A peak MiB')" \
            "$(median_of "$report" 'A cpu s')" "$(median_of "$report" 'A/B wall')"
        [ -n "$first" ] || first="$tool"
    done
done
for direction in up down; do
    report="$results/$first-$direction"
    label=upload; [ "$direction" = down ] && label=download
    row "curl (paired with $first)" "$label" "$(median_of "$report" 'B wall s')" "$(median_of "$report" 'B peak MiB')" \
        "$(median_of "$report" 'B cpu s')" ""
done
echo
if [ -n "$ferry_read" ]; then
    echo "Ferry read $((ferry_read / 1024 / 1024)) MiB of the $size_mib MiB source file in one upload."
fi
for report in "$results"/*; do
    echo "== $(basename "$report")" >&2
    cat "$report" >&2
done
