#!/usr/bin/env bash
# Uploads and downloads one large file through the sandbox gateway's store
# with Ferry (the engine at default settings), curl (one presigned PUT and
# one presigned GET), rclone and aws s3 cp (the sandbox's S3 credentials),
# and prints a Markdown table: median throughput of RUNS runs, peak RSS and
# CPU seconds (from /usr/bin/time -v), and throughput as a share of curl's.
#
# Usage: scripts/bench-transfer.sh [SIZE_MIB]   (default 4096; 2048 when
# the disk is short). Needs about 4 × SIZE free in BENCH_DIR (default a
# new folder in /var/tmp), removed at exit. RUNS=3 by default; TOOLS
# chooses the tools (default "ferry curl rclone aws"; curl is always run).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/ferry-target}"
runs="${RUNS:-3}"
tools=" ${TOOLS:-ferry curl rclone aws} curl "
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
    if [ "$free_mib" -lt $((4 * 4096 + 1024)) ]; then size_mib=2048; fi
fi
if [ "$free_mib" -lt $((4 * size_mib + 1024)) ]; then
    echo "only $free_mib MiB free in $work; $((4 * size_mib + 1024)) MiB needed for $size_mib MiB" >&2
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
aws() { "$aws_cli" --endpoint-url "$endpoint" "$@"; }

# Runs a command under /usr/bin/time -v; appends "seconds rss_kib cpu_seconds"
# to the file named by $1.
measure() {
    local into="$1"; shift
    local report="$work/time.txt"
    /usr/bin/time -v -o "$report" "$@" >"$work/out.txt" 2>>"$work/commands.log" || {
        echo "failed: $*" >&2; cat "$work/commands.log" >&2; exit 1; }
    awk -F': ' '
        /Elapsed \(wall clock\)/ { n = split($2, t, ":"); wall = (n == 3) ? t[1]*3600 + t[2]*60 + t[3] : t[1]*60 + t[2] }
        /User time/ { cpu += $2 } /System time/ { cpu += $2 }
        /Maximum resident set size/ { rss = $2 }
        END { printf "%.2f %d %.2f\n", wall, rss, cpu }' "$report" >>"$into"
}

check() { # compares a downloaded file with the source
    local actual
    actual="$(sha256sum "$1" | cut -d' ' -f1)"
    if [ "$actual" != "$expected" ]; then echo "$1 differs from the source" >&2; exit 1; fi
    rm -f "$1"
}

results="$work/results"; mkdir -p "$results"
download_dir="$work/down"; mkdir -p "$download_dir"

ferry_read=""
wants ferry && echo "ferry ..." >&2
wants ferry && for run in $(seq "$runs"); do
    measure "$results/ferry-up" "$ferry" upload "$fhir" "$source_file" "$work/up-$run.sqlite"
    document_id="$(cat "$work/out.txt")"
    measure "$results/ferry-down" "$ferry" download "$fhir" "$document_id" "$download_dir" "$work/down-$run.sqlite"
    check "$(cat "$work/out.txt")"
    object="$(aws s3 ls "s3://$bucket/uploads/" | awk '{print $4}')"
    for key in $object; do aws s3 rm --only-show-errors "s3://$bucket/uploads/$key"; done
done
# Bytes of the source file read by one upload, from its pread64 calls.
wants ferry && strace -f -y -e trace=pread64,read -o "$work/strace.txt" "$ferry" upload "$fhir" "$source_file" "$work/strace.sqlite" >/dev/null
wants ferry && ferry_read=$(grep -F "<$source_file>" "$work/strace.txt" | sed -n 's/.*= \([0-9]\+\)$/\1/p' | awk '{s += $1} END {printf "%d", s}')

echo "curl ..." >&2
put_url="$("$ferry" presign PUT "$endpoint" "$region" "$bucket" bench/curl.bin)"
get_url="$("$ferry" presign GET "$endpoint" "$region" "$bucket" bench/curl.bin)"
for run in $(seq "$runs"); do
    measure "$results/curl-up" curl -sS --fail -T "$source_file" -o /dev/null "$put_url"
    measure "$results/curl-down" curl -sS --fail -o "$download_dir/curl.bin" "$get_url"
    check "$download_dir/curl.bin"
done

wants rclone && echo "rclone ..." >&2
wants rclone && for run in $(seq "$runs"); do
    measure "$results/rclone-up" env -u AWS_CA_BUNDLE rclone copyto --ignore-times "$source_file" "sandbox:$bucket/bench/rclone.bin"
    measure "$results/rclone-down" env -u AWS_CA_BUNDLE rclone copyto --ignore-times "sandbox:$bucket/bench/rclone.bin" "$download_dir/rclone.bin"
    check "$download_dir/rclone.bin"
done

wants aws && echo "aws s3 cp ..." >&2
wants aws && for run in $(seq "$runs"); do
    measure "$results/aws-up" "$aws_cli" --endpoint-url "$endpoint" s3 cp --only-show-errors "$source_file" "s3://$bucket/bench/aws.bin"
    measure "$results/aws-down" "$aws_cli" --endpoint-url "$endpoint" s3 cp --only-show-errors "s3://$bucket/bench/aws.bin" "$download_dir/aws.bin"
    check "$download_dir/aws.bin"
done

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
column_median() { awk -v c="$2" '{print $c}' "$results/$1" | median; }
curl_up=$(column_median curl-up 1)
curl_down=$(column_median curl-down 1)

echo
echo "$size_mib MiB file, median of $runs runs; $(nproc) cores; loopback; $("$aws_cli" --version | cut -d' ' -f1), $(rclone version | head -1), $(curl --version | head -1 | cut -d' ' -f1-2)."
echo
echo "| tool | direction | MiB/s | share of curl | peak RSS (MiB) | CPU s |"
echo "|---|---|---:|---:|---:|---:|"
for tool in ferry curl rclone aws; do
    wants "$tool" || continue
    for direction in up down; do
        seconds=$(column_median "$tool-$direction" 1)
        rss=$(column_median "$tool-$direction" 2)
        cpu=$(column_median "$tool-$direction" 3)
        reference=$curl_up; [ "$direction" = down ] && reference=$curl_down
        awk -v t="$tool" -v d="$direction" -v s="$seconds" -v r="$rss" -v c="$cpu" -v m="$size_mib" -v ref="$reference" \
            'BEGIN { label = (d == "up") ? "upload" : "download"; name = (t == "aws") ? "aws s3 cp" : t;
                     printf "| %s | %s | %.0f | %.0f %% | %.0f | %.1f |\n", name, label, m / s, 100 * ref / s, r / 1024, c }'
    done
done
echo
if [ -n "$ferry_read" ]; then
    echo "Ferry read $((ferry_read / 1024 / 1024)) MiB of the $size_mib MiB source file in one upload."
fi
