#!/usr/bin/env bash
# The first look at sweepctl on a GPU (issue 15), in about 8 minutes; the summary comes last.
#
#     bash bench/gpu_wheels.sh                 # HERE first, where pip and apt reach the network: fills .whl/
#     bash bench/gpu_check.sh                  # THERE, from the repository root (the device call carries .whl)
#     DEVICE=cpu bash bench/gpu_check.sh       # every part but CUDA, on tiny sizes (what the test runs)
#
# Four parts, each in its own process under its own time limit, so one that hangs or fails still
# leaves the others' results:
#   bench    bench/gpu.sh: base, hc, mhc, mhc_48l compiled from a cold cache at preset sizes, bf16;
#            then the Triton Sinkhorn, static-mHC, eager and CUDA-graph rows while BENCH_BUDGET lasts
#   sweep    bench/gpu_sweep.py: data prepare offline, launch of plain/HC/mHC in tmux on GPU 0, status
#            against the real nvidia-smi, the mHC trainer SIGTERMed mid-run, launch --retry-failed
#            resuming it from its checkpoint, status --json, report; one PASS/FAIL line per check
#   ddp      the trainer through torchrun with gpus=1 (NCCL on CUDA, gloo on the CPU); its summary checked
#   profile  bench/profile_step.py: torch.profiler of one compiled mhc step, top kernels, kernels per step
# PARTS="sweep ddp" runs only those (a rerun after a fix). Installs nothing: wheels found in .whl/
# go to a folder of its own on PYTHONPATH, tmux found in .whl/deb/ is unpacked there too (never over
# /); what is still missing is named, with the command that fetches it, and the parts that need it
# are skipped (the sweep without tmux starts its shard runner directly, labelled NO TMUX).
# Output: $OUT/gpu_check_summary.txt (the summary), $OUT/gpu_check.tar.gz (every log, table and JSON;
# no checkpoints or token shards); $OUT unset: a temp folder, named at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PARTS=${PARTS:-bench sweep ddp profile}
OUT_DIR=${OUT:-$(mktemp -d)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
if [ "$DEVICE" = cpu ]; then  # tiny sizes; budgets for a loaded 2-core machine
    BENCH_BUDGET=${BENCH_BUDGET:-90} SWEEP_LIMIT=${SWEEP_LIMIT:-400} DDP_LIMIT=${DDP_LIMIT:-120}
    PROFILE_LIMIT=${PROFILE_LIMIT:-120}
    export BENCH_ARGS=${BENCH_ARGS:---no-compile} ITERS=${ITERS:-1}
    PROFILE_ARGS=${PROFILE_ARGS:---tiny --no-compile --steps 1 --warmup 1}
    DDP_SIZE="n_layer=2 n_head=2 n_embd=32 block_size=32 batch_size=4 max_iters=6 eval_interval=6 eval_iters=1"
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    BENCH_BUDGET=${BENCH_BUDGET:-260} SWEEP_LIMIT=${SWEEP_LIMIT:-140} DDP_LIMIT=${DDP_LIMIT:-45}
    PROFILE_LIMIT=${PROFILE_LIMIT:-90}
    PROFILE_ARGS=${PROFILE_ARGS:---compile --steps 2 --warmup 3}
    DDP_SIZE="n_layer=4 n_head=4 n_embd=256 block_size=256 batch_size=16 max_iters=100 eval_interval=50 eval_iters=5"
fi
START=$SECONDS
SUMMARY=()
say() { SUMMARY+=("$*"); echo "== $*"; }
want() { [[ " $PARTS " == *" $1 "* ]]; }
section() { echo; echo "=============== $1 ($((SECONDS - START)) s in)"; }

# --------------------------------------------------------------------------- what this machine has
section env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$WORK/nvidia-smi.txt"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
missing_modules() {
    "$PY" - <<'EOF'
import importlib
for name in ("torch", "numpy", "pydantic", "pydantic_settings", "typer", "rich", "libtmux", "tiktoken"):
    try:
        importlib.import_module(name)
    except Exception:
        print(name, end=" ")
EOF
}
missing=$(missing_modules)
# Only when something is missing (the image's own packages stay otherwise): the device README's
# recipe, into a folder of this run's own, ahead on PYTHONPATH.
if [ -n "$missing" ] && ls .whl/*.whl >/dev/null 2>&1; then
    echo "missing: $missing; installing .whl/*.whl into $WORK/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        .whl/*.whl && export PYTHONPATH="$WORK/site:$PYTHONPATH"
    missing=$(missing_modules)
fi
"$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1
if [ "$DEVICE" != cpu ] && ! "$PY" -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    say "env: FAIL: $PY sees no CUDA device (DEVICE=cpu checks this script without one)"
    missing="$missing cuda"
fi
[ -n "$missing" ] && say "env: MISSING python packages: $missing— run \`bash bench/gpu_wheels.sh\` where pip reaches the network and carry .whl"
NO_TMUX=()
if [ "${GPU_CHECK_TMUX:-}" = none ] || ! { command -v tmux >/dev/null || ls .whl/deb/tmux_*.deb >/dev/null 2>&1; }; then
    NO_TMUX=(--no-tmux)
elif ! command -v tmux >/dev/null; then  # unpacked under $WORK, run through a wrapper that finds its libraries
    for deb in .whl/deb/*.deb; do dpkg -x "$deb" "$WORK/tools"; done
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s/usr/bin/tmux "$@"\n' \
        "$WORK/tools" "$WORK/tools" > "$WORK/bin/tmux"
    chmod +x "$WORK/bin/tmux"
    export PATH="$WORK/bin:$PATH"
    tmux -V >/dev/null 2>&1 || NO_TMUX=(--no-tmux)
fi
echo "tmux: $(tmux -V 2>&1 || echo none)"
[ ${#NO_TMUX[@]} -gt 0 ] && say "env: no usable tmux (carry .whl/deb from bench/gpu_wheels.sh): the sweep starts its runner directly, NO TMUX"
needs() {  # needs PART MODULE...: skip PART when one of its modules is missing
    local part=$1 m
    shift
    for m in "$@"; do
        if [[ " $missing " == *" $m "* ]]; then say "$part: SKIPPED: $m missing"; return 1; fi
    done
}

# --------------------------------------------------------------------------- 1. the trainer benchmark
if want bench && needs bench torch pydantic cuda; then
    section "1. bench (bench/gpu.sh, BUDGET=$BENCH_BUDGET s)"
    OUT=$WORK BUDGET=$BENCH_BUDGET DEVICE=$DEVICE PYTHON=$PY BENCH_CACHE_ROOT=$WORK/bench-cache bash bench/gpu.sh 2>&1 | tee "$WORK/bench.log"
    rc=${PIPESTATUS[0]}
    ran=$(find "$WORK/sweepctl-bench" -name '*.json' -size +0 2>/dev/null | wc -l)
    say "bench: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)"): $ran row file(s); the table:"
    while IFS= read -r line; do SUMMARY+=("    $line"); done < <(sed -n '/^JSON in/,$p' "$WORK/bench.log" | tail -n +2)
    while IFS= read -r line; do SUMMARY+=("    $line"); done < <(grep -E 'skipped|exit [0-9]+' "$WORK/bench.log")
fi

# --------------------------------------------------------------------------- 2. a real sweep
if want sweep && needs sweep torch pydantic pydantic_settings typer rich libtmux tiktoken cuda; then
    section "2. sweep (bench/gpu_sweep.py, ${SWEEP_LIMIT} s)"
    timeout $((SWEEP_LIMIT + 45)) "$PY" bench/gpu_sweep.py --work "$WORK/sweep" --device "$DEVICE" \
        --timeout "$SWEEP_LIMIT" --json "$WORK/sweep.json" ${NO_TMUX[@]+"${NO_TMUX[@]}"} 2>&1 | tee "$WORK/sweep.log"
    rc=${PIPESTATUS[0]}
    say "sweep: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc)"): $(grep -E '^sweep.*passed' "$WORK/sweep.log" | tail -1)"
    while IFS= read -r line; do SUMMARY+=("    $line"); done < <(grep -E '^FAIL ' "$WORK/sweep.log")
fi

# --------------------------------------------------------------------------- 3. DDP through torchrun
if want ddp && needs ddp torch numpy pydantic tiktoken cuda; then
    section "3. ddp (torchrun --nproc_per_node=1, ${DDP_LIMIT} s)"
    data=$WORK/sweep/data
    if ! ls "$data"/fineweb_val_*.bin >/dev/null 2>&1; then  # the sweep did not run: shards of its own
        data=$WORK/ddp-data
        "$PY" -c 'import sys; from sweepctl.demo import corpus_files; print("\n".join(map(str, corpus_files(200_000))))' \
            | xargs "$PY" -m sweepctl data prepare --out "$data" > "$WORK/ddp-data.log" 2>&1
    fi
    backend=nccl
    [ "$DEVICE" = cpu ] && backend=gloo
    dtype=bfloat16
    [ "$DEVICE" = cpu ] && dtype=float32
    run_dir=$WORK/ddp/gpucheck-ddp-s1
    # shellcheck disable=SC2086  # DDP_SIZE is a list of words
    timeout "$DDP_LIMIT" "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m sweepctl.train base \
        out_dir="$run_dir" data_dir="$data" device="'$DEVICE'" backend="'$backend'" dtype="'$dtype'" $DDP_SIZE \
        log_interval=10 wandb_log=False 2>&1 | tee "$WORK/ddp.log"
    rc=${PIPESTATUS[0]}
    verdict=$("$PY" - "$run_dir" "$DEVICE" "$rc" <<'EOF'
import json, sys
from pathlib import Path
run, device, rc = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    s = json.loads((run / "summary.json").read_text())
    m = json.loads((run / "run_metadata.json").read_text())
except (OSError, ValueError) as e:
    print(f"FAIL (exit {rc}): no summary: {e}")
    sys.exit()
ok = (rc == "0" and s["status"] == "completed" and s["ddp"] is True and s["world_size"] == 1
      and m["ddp"] is True and s["device"].startswith(device))
tok = f"{s['tok_per_s']:,.0f} tok/s" if s.get("tok_per_s") else "no tok/s"
print(f"{'PASS' if ok else f'FAIL (exit {rc})'}: status {s['status']}, ddp {s['ddp']}, world_size {s['world_size']}, "
      f"device {s['device']}, {s['dtype']}, iter {s['iter_num']}, {tok}, peak mem {s.get('peak_mem_mb')} MB")
EOF
)
    say "ddp ($backend): $verdict"
fi

# --------------------------------------------------------------------------- 4. where a step's time goes
if want profile && needs profile torch pydantic cuda; then
    section "4. profile (bench/profile_step.py, ${PROFILE_LIMIT} s)"
    # the bench's compiled-mhc cache when it ran: the same graphs, so the compile is short and the
    # limit goes to the profile (without it, a cold compile of its own)
    cache=$WORK/bench-cache/compiled-mhc
    [ -d "$cache" ] || cache=$WORK/inductor-cache
    # shellcheck disable=SC2086  # PROFILE_ARGS is a list of flags
    TORCHINDUCTOR_CACHE_DIR=$cache timeout "$PROFILE_LIMIT" "$PY" bench/profile_step.py --preset mhc \
        --device "$DEVICE" $PROFILE_ARGS --top 12 --json "$WORK/profile.json" 2>&1 | tee "$WORK/profile.log"
    rc=${PIPESTATUS[0]}
    say "profile: $([ "$rc" = 0 ] && echo PASS || echo "FAIL (exit $rc; 124: over ${PROFILE_LIMIT} s)")"
    while IFS= read -r line; do SUMMARY+=("    $line"); done < <(sed -n '/^profile:/,$p' "$WORK/profile.log" | grep -v USDT)
fi

# --------------------------------------------------------------------------- the summary, last
mkdir -p "$OUT_DIR"
tar -C "$WORK" --exclude='*.pt' --exclude='*.bin' --exclude=site --exclude=tools --exclude=inductor-cache --exclude=bench-cache \
    --exclude=tmux.sock -czf "$OUT_DIR/gpu_check.tar.gz" . 2>/dev/null
{
    echo "gpu_check: DEVICE=$DEVICE, parts: $PARTS, $((SECONDS - START)) s; logs in $OUT_DIR/gpu_check.tar.gz"
    echo "work folder (run directories, checkpoints, token shards; left in place): $WORK"
    printf '%s\n' "${SUMMARY[@]}"
} > "$OUT_DIR/gpu_check_summary.txt"
echo
echo "=============== summary"
cat "$OUT_DIR/gpu_check_summary.txt"
! grep -qE '^(env|bench|sweep|ddp|profile)[^:]*: (FAIL|SKIPPED|MISSING)' "$OUT_DIR/gpu_check_summary.txt"
