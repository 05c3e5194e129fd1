#!/usr/bin/env bash
# The first minutes on a GPU: the tests marked gpu, then throughput and memory, in one table.
#
#   scripts/gpu_check.sh --prepare           # here, with network: wheels for the GPU machine in .gpu_wheels/
#   scripts/gpu_check.sh [RESULTS]           # on the GPU machine, offline (default RESULTS: results/gpu_check)
#   scripts/gpu_check.sh --plan              # the stages and their time budgets
#
# For a machine with one GPU, no network and a python3 holding torch but not snakemake or
# jsonschema: .ci/gpu_wheels.py installs those from .gpu_wheels/ into a folder on PYTHONPATH,
# never touching the installed packages. Every stage has its own time budget, so a hang leaves
# the others' results, and all end within TOTAL_S. Writes RESULTS/gpu_check.txt (the table),
# RESULTS/gpu_check.json, each stage's JSON and log (RESULTS/logs/). Without CUDA: says so, exit 0.
set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
TOTAL_S=465 # from the start, under the 8 minutes the check may take; the stages below fit in it
# name, seconds: in the order they run (pytest and dataset run side by side)
BUDGETS="install 30
pytest 125
dataset 130
bench_bf16 45
bench_fp32 25
train 60
pack2 30
pack4 35
bench_bf16_compile 50
bench_fp32_compile 40
table 10"

budget() { awk -v n="$1" '$1 == n { print $2 }' <<<"$BUDGETS"; }

case "${1:-}" in
--prepare) exec "$PY" .ci/gpu_wheels.py prepare .gpu_wheels ;;
--plan) # dataset runs beside pytest, so it adds nothing to the total
    awk -v total="$TOTAL_S" '{ printf "%-20s %4d s\n", $1, $2; if ($1 != "dataset") sum += $2 }
        END { printf "%-20s %4d s (at most %d s)\n", "total", sum, total }' <<<"$BUDGETS"
    exit 0
    ;;
-h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

RESULTS=${1:-results/gpu_check}
"$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 4)' 2>/dev/null
case $? in
0) ;;
4) echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check" && exit 0 ;;
*) echo "gpu_check: $PY cannot import torch" >&2 && exit 1 ;;
esac

if [[ -e $RESULTS && ! -e $RESULTS/stages.tsv ]]; then
    echo "gpu_check: $RESULTS exists and is not an earlier check's results: not overwriting it" >&2
    exit 2
fi
rm -rf "$RESULTS"
LOGS=$RESULTS/logs
mkdir -p "$LOGS"
DATA=/tmp/gpu_check_data # the full-size synthetic set: 180 MB, not worth carrying back
# Snakemake's rules call `python`: make it the python3 that holds torch.
mkdir -p /tmp/gpu_check_bin && ln -sf "$(command -v "$PY")" /tmp/gpu_check_bin/python
export PATH=/tmp/gpu_check_bin:$PATH PYTHONPATH=/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# stage NAME COMMAND...: run within NAME's budget (cut to what is left before TOTAL_S, counted by
# SECONDS from this script's start), output to LOGS/NAME.log, outcome to RESULTS/stages.tsv.
stage() {
    local name=$1 limit t0 rc
    shift
    limit=$(budget "$name")
    ((TOTAL_S - SECONDS - $(budget table) < limit)) && limit=$((TOTAL_S - SECONDS - $(budget table)))
    if ((limit < 5)); then
        printf '%s\t%s\tskipped\t-\n' "$name" "$(budget "$name")" >>"$RESULTS/stages.tsv"
        echo "-- $name: skipped, no time left"
        return 0
    fi
    t0=$(date +%s%N)
    timeout -k 5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$(budget "$name")" "$rc" $((($(date +%s%N) - t0) / 1000000)) >>"$RESULTS/stages.tsv"
    echo "-- $name: exit $rc after $((($(date +%s%N) - t0) / 1000000000)) s (limit $limit s)"
    ((rc == 0)) || tail -n 5 "$LOGS/$name.log" | sed 's/^/   /'
    return 0
}

if "$PY" -c 'import snakemake, jsonschema' 2>/dev/null; then
    printf 'install\t%s\t0\t0\n' "$(budget install)" >>"$RESULTS/stages.tsv"
else
    stage install "$PY" .ci/gpu_wheels.py install .gpu_wheels /tmp/gpu_check_site
fi

# The dataset is written beside the tests (CPU and disk work; the tests time nothing).
stage dataset "$PY" -c 'import sys; sys.path.insert(0, "scripts"); from cifar100 import data
data.write_synthetic(sys.argv[1], train_size=50_000, test_size=10_000, num_classes=100, num_coarse=20)' "$DATA" &
dataset_pid=$!
# The gpu tests all live in tests/test_gpu.py: collecting only it keeps another module's import error out.
stage pytest "$PY" -m pytest -m gpu -p no:cacheprovider -q -rA tests/test_gpu.py
wait $dataset_pid

# (b), the notebook's pipeline, runs once, in bench_bf16; the table divides the others by it.
stage bench_bf16 "$PY" scripts/bench.py --device cuda --precision bf16 --json "$RESULTS/bench_bf16.json"
stage bench_fp32 "$PY" scripts/bench.py --device cuda --precision fp32 --no-reference --json "$RESULTS/bench_fp32.json"

TRAIN=("$PY" scripts/gpu_check.py train --data-dir "$DATA")
stage train "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/one --seeds 0 --epochs 3 --save-repeats 5 \
    --json "$RESULTS/train.json" --logs "$LOGS/train"
stage pack2 "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/two --seeds 0 1 --epochs 2 --json "$RESULTS/pack2.json" --logs "$LOGS/pack2"
stage pack4 "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/four --seeds 0 1 2 3 --epochs 2 --json "$RESULTS/pack4.json" --logs "$LOGS/pack4"

# Compilation takes most of these two stages' time, so they come last.
BENCH=("$PY" scripts/bench.py --device cuda --compile --no-reference)
stage bench_bf16_compile "${BENCH[@]}" --precision bf16 --json "$RESULTS/bench_bf16_compile.json"
stage bench_fp32_compile "${BENCH[@]}" --precision fp32 --json "$RESULTS/bench_fp32_compile.json"

timeout 10 "$PY" scripts/gpu_check.py table --results "$RESULTS"
