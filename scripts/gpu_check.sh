#!/usr/bin/env bash
# The first minutes on a GPU: the tests marked gpu, then throughput and memory, in one table.
#
#   scripts/gpu_check.sh --prepare           # here, with network: wheels for the GPU machine in .gpu_wheels/
#   scripts/gpu_check.sh [RESULTS]           # on the GPU machine, offline (default RESULTS: results/gpu_check)
#   scripts/gpu_check.sh --plan              # the stages and their time budgets
#
# Made for a machine with one GPU, no network and a python3 that holds torch but not snakemake or
# jsonschema: those come from .gpu_wheels/ (made by --prepare) into a folder on PYTHONPATH, so
# that pip never touches the installed packages (torch above all). Every stage has its own time
# budget (timeout), so a hang leaves the table of the others; all of them end within TOTAL_S.
# Writes RESULTS/gpu_check.txt (the table), RESULTS/gpu_check.json (its numbers), every stage's
# JSON and log (RESULTS/logs/). Without a CUDA device it says so and exits 0.
set -u -o pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=.gpu_wheels
SITE=/tmp/gpu_check_site
TOTAL_S=465 # from the start, under the 8 minutes the check may take; the stages below fit in it
# name, seconds: in the order they run (pytest and dataset run side by side)
BUDGETS="install 30
pytest 125
dataset 130
bench_bf16 45
bench_fp32 25
train 45
save 15
pack2 30
pack4 35
bench_bf16_compile 50
bench_fp32_compile 40
table 10"

budget() { awk -v n="$1" '$1 == n { print $2 }' <<<"$BUDGETS"; }

case "${1:-}" in
--prepare)
    exec "$PY" scripts/gpu_check.py prepare --wheels "$WHEELS"
    ;;
--plan)
    # dataset runs beside pytest, so it adds nothing to the total
    awk -v total="$TOTAL_S" '{ printf "%-20s %4d s\n", $1, $2; if ($1 != "dataset") sum += $2 }
        END { printf "%-20s %4d s (at most %d s)\n", "total", sum, total }' <<<"$BUDGETS"
    exit 0
    ;;
-h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

RESULTS=${1:-results/gpu_check}
"$PY" -c 'import importlib.util as u, sys
sys.exit(3 if u.find_spec("torch") is None else 0 if __import__("torch").cuda.is_available() else 4)'
case $? in
0) ;;
4)
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check"
    exit 0
    ;;
*)
    echo "gpu_check: $PY cannot import torch" >&2
    exit 1
    ;;
esac

DEADLINE=$TOTAL_S # SECONDS counts from this script's start
if [[ -e $RESULTS && ! -e $RESULTS/stages.tsv ]]; then
    echo "gpu_check: $RESULTS exists and is not an earlier check's results: not overwriting it" >&2
    exit 2
fi
rm -rf "$RESULTS"
mkdir -p "$RESULTS/logs"
LOGS=$RESULTS/logs
DATA=/tmp/gpu_check_data # the full-size synthetic set: 180 MB, not worth carrying back
# Snakemake's rules call `python`: make it the python3 that holds torch.
mkdir -p /tmp/gpu_check_bin && ln -sf "$(command -v "$PY")" /tmp/gpu_check_bin/python
export PATH=/tmp/gpu_check_bin:$PATH PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1

# stage NAME COMMAND...: run within NAME's budget (cut to what is left before the deadline),
# output to LOGS/NAME.log, outcome (exit status, milliseconds) to RESULTS/stages.tsv.
stage() {
    local name=$1 limit left t0 rc
    shift
    limit=$(budget "$name")
    left=$((DEADLINE - SECONDS - $(budget table)))
    ((left < limit)) && limit=$left
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

"$PY" - "$RESULTS/environment.json" <<'EOF'
import datetime, json, platform, subprocess, sys, torch
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip()
json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "nvidia_smi": smi}, open(sys.argv[1], "w"), indent=2)
EOF

if "$PY" -c 'import snakemake, jsonschema' 2>/dev/null; then
    printf 'install\t%s\t0\t0\n' "$(budget install)" >>"$RESULTS/stages.tsv"
else
    stage install "$PY" scripts/gpu_check.py install --wheels "$WHEELS" --site "$SITE"
fi

# The dataset is written beside the tests (CPU and disk work; the tests time nothing).
stage dataset "$PY" scripts/gpu_check.py dataset --data-dir "$DATA" &
dataset_pid=$!
# The gpu tests all live in tests/test_gpu.py: collecting only it keeps another module's import error out.
stage pytest "$PY" -m pytest -m gpu -p no:cacheprovider -q -rA --junitxml="$RESULTS/pytest.xml" tests/test_gpu.py
wait $dataset_pid

BENCH=(scripts/bench.py --device cuda)
stage bench_bf16 "$PY" "${BENCH[@]}" --precision bf16 --json "$RESULTS/bench_bf16.json"
# (b), the notebook's pipeline, runs once, in bench_bf16; the others reuse its figures for their ratios.
REF=(--no-reference)
[[ -f $RESULTS/bench_bf16.json ]] && REF+=(--reference-json "$RESULTS/bench_bf16.json")
stage bench_fp32 "$PY" "${BENCH[@]}" --precision fp32 "${REF[@]}" --json "$RESULTS/bench_fp32.json"

TRAIN=(scripts/gpu_check.py train --data-dir "$DATA")
stage train "$PY" "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/one --seeds 0 --epochs 3 --json "$RESULTS/train.json" --logs "$LOGS/train"
stage save "$PY" scripts/gpu_check.py save --checkpoint /tmp/gpu_check_runs/one/seed0/last.pt --json "$RESULTS/save.json"
stage pack2 "$PY" "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/two --seeds 0 1 --epochs 2 --json "$RESULTS/pack2.json" --logs "$LOGS/pack2"
stage pack4 "$PY" "${TRAIN[@]}" --out-dir /tmp/gpu_check_runs/four --seeds 0 1 2 3 --epochs 2 --json "$RESULTS/pack4.json" --logs "$LOGS/pack4"

# Compilation takes most of these two stages' time, so they come last.
stage bench_bf16_compile "$PY" "${BENCH[@]}" --precision bf16 --compile "${REF[@]}" --json "$RESULTS/bench_bf16_compile.json"
stage bench_fp32_compile "$PY" "${BENCH[@]}" --precision fp32 --compile "${REF[@]}" --json "$RESULTS/bench_fp32_compile.json"

timeout 10 "$PY" scripts/gpu_check.py table --results "$RESULTS"
