#!/usr/bin/env bash
# Trainer throughput on one GPU (issue 8's targets), in about 5 minutes; the table comes last.
#
#     bash bench/gpu.sh                # from the repository root, on the GPU machine
#
# Installs nothing: it needs a Python (PYTHON, default python3) with a CUDA torch and pydantic,
# and imports sweepctl from this checkout's src/. Each compiled preset runs on its own, under its
# own time limit, with a fresh inductor cache (a cold compile, what a new pod pays), so one slow or
# failing preset still leaves the others' figures. JSON lands in $OUT (or a temp folder).
# The presets: base, hc, mhc (dynamic, as the paper), mhc_48l at their preset batch and block,
# bf16 autocast, fused AdamW, one micro-batch per step; then mhc with hc_static_only (the
# hoisted, one-Sinkhorn-per-forward path), mhc and mhc_48l with the fused Triton Sinkhorn
# (SWEEPCTL_SINKHORN_TRITON=1), the eager figures of base and mhc, and mhc_48l under CUDA graphs
# (--compile-mode reduce-overhead). Compiled runs
# also check their gradients against an eager copy on one batch ("grad err", bf16: ~1e-2).
# The whole script keeps to BUDGET seconds (default 330): the four presets come first, each under
# its own LIMIT; the extra rows run only while the budget lasts, most informative first, and a row
# that did not run says so in the table's log. Lent GPU time is short: one run, read, change, rerun.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-$(mktemp -d)}/sweepctl-bench
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
ITERS=${ITERS:-20}
LIMIT=${LIMIT:-75}  # seconds per compiled run: compile (target <= 60 s) + the steps
BUDGET=${BUDGET:-330}  # seconds for the whole script
START=$SECONDS
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu BENCH_ARGS=--no-compile ITERS=1: a quick check of this script
read -r -a EXTRA <<< "${BENCH_ARGS:-}"  # appended to every run (the last flag wins)

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
if ! "$PY" -c "import torch, pydantic, sweepctl.train.bench; assert '$DEVICE' == 'cpu' or torch.cuda.is_available()"; then
    echo "error: $PY cannot import torch (with CUDA), pydantic and sweepctl.train.bench; set PYTHON=" >&2
    exit 2
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'

run() {  # run NAME LIMIT ARGS...: one bench invocation -> $OUT_DIR/NAME.json, progress on stderr
    local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START)))
    shift 2
    if [ "$left" -lt 30 ]; then  # too little left for a cold compile: say so rather than time out
        echo "$name: skipped, ${left}s of the ${BUDGET}s budget left (BUDGET=...)" >&2
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    # A fresh, empty inductor cache per row: a cold compile. Under BENCH_CACHE_ROOT it is kept as
    # BENCH_CACHE_ROOT/NAME, so a later profile of the same preset (gpu_check.sh) starts warm.
    local cache
    if [ -n "${BENCH_CACHE_ROOT:-}" ]; then cache=$BENCH_CACHE_ROOT/$name; mkdir -p "$cache"; else cache=$(mktemp -d); fi
    TORCHINDUCTOR_CACHE_DIR=$cache timeout "$limit" "$PY" -m sweepctl.train.bench --device "$DEVICE" --json "$@" \
        ${EXTRA[@]+"${EXTRA[@]}"} > "$OUT_DIR/$name.json" || echo "$name: exit $? (124: timed out after ${limit}s)" >&2
}

for preset in base hc mhc mhc_48l; do
    run "compiled-$preset" "$LIMIT" --presets "$preset" --compile --iters "$ITERS" --warmup 3
done
# then, while the budget lasts: the fused Triton Sinkhorn (off by default until these rows show its
# grad err and speed), the hoisted static-mHC path, and the eager figures
for preset in mhc mhc_48l; do
    SWEEPCTL_SINKHORN_TRITON=1 run "compiled-$preset-triton" "$LIMIT" --presets "$preset" --compile --iters "$ITERS" --warmup 3
done
run compiled-mhc-static "$LIMIT" --presets mhc --compile --iters "$ITERS" --warmup 3 --set hc_static_only=True
run eager 35 --presets base,mhc --no-compile --iters 5 --warmup 1
# CUDA graphs against the launch overhead of mhc_48l's many small kernels (untried with the Sinkhorn op)
run compiled-mhc_48l-cudagraphs "$LIMIT" --presets mhc_48l --compile --compile-mode reduce-overhead --iters "$ITERS" \
    --warmup 3

echo
echo "JSON in $OUT_DIR ($((SECONDS - START)) s)"
done=()
for name in compiled-{base,hc,mhc,mhc_48l,mhc-triton,mhc_48l-triton,mhc-static} eager compiled-mhc_48l-cudagraphs; do
    [ -s "$OUT_DIR/$name.json" ] && done+=("$OUT_DIR/$name.json")
done
if [ ${#done[@]} -eq 0 ]; then
    echo "error: no run finished (see the lines above)" >&2
    exit 1
fi
"$PY" -m sweepctl.train.bench --show "${done[@]}"
