"""`sweepctl export slurm`: a sweep as an sbatch job array, one array task per row.

    exported = export(Path("sweeps/fineweb.csv"), SlurmOptions(concurrency=8), settings)
    # sbatch <out_root>/.sweeps/fineweb/fineweb.sbatch

The CSV is validated and planned as `launch` does, and the same `.sweeps/<name>/` manifest is
written (plan.json, CSV and config copies, launch.json), so `status` and `report` read a Slurm
sweep like any other. Array task I runs `sweepctl runner SWEEP_DIR --row-index R`: the shard
runner's per-row code path (lock, run table, trainer, tee, summary, `.bak-` copies) for row R,
on the GPUs Slurm gave it (CUDA_VISIBLE_DEVICES). Tasks take the rows longest first
(`plan.claim_order`, as dynamic shards claim them): Slurm starts array tasks in index order, so a
long row does not start last and hold the sweep's end. The script lists the row of each task.
The array spans every row, and a row that is already ok is skipped in a second, so submitting
the script again runs what was not started and resumes stale rows. A row that `scancel` or a time
limit interrupted is failed to the run table (as after `sweepctl stop`): the script names the
`export slurm ... --retry-failed` that writes it again to resume those rows.

The script needs nothing from the submitting shell (sites with SBATCH_EXPORT=NONE): the sweep
directory and the interpreter are absolute paths in it. #SBATCH lines are read by sbatch, not bash,
so a path in them is quoted the way sbatch reads quotes. tests/test_slurm_sbatch.py submits it to a
one-node Slurm.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sweepctl import __version__, launch
from sweepctl.errors import SpecError, SweepctlError
from sweepctl.pod.gpus import GpuQuery
from sweepctl.settings import Settings
from sweepctl.sweep.plan import Plan, claim_order
from sweepctl.sweep.spec import read_sweep
from sweepctl.train.contract import write_text_atomic

SLURM_LOG_DIR = "slurm"  # .sweeps/<name>/slurm/<job>_<task>.out; sbatch does not create it


@dataclass
class SlurmOptions(launch.LaunchOptions):
    """launch's options plus the array's; `asdict` puts them into launch.json."""

    shards: int = 1  # one plan shard: Slurm, not the plan, places rows
    backend: str = "slurm"
    gpus_per_task: int | None = None  # None: the most any row asks for
    concurrency: int | None = None  # at most this many array tasks at once; None: Slurm's limit
    script: str | None = None


@dataclass
class SlurmExport:
    preview: launch.LaunchPreview
    script: Path
    rows: int
    array: str
    warnings: list[str]


def array_spec(rows: int, concurrency: int | None) -> str:
    return f"0-{rows - 1}" + (f"%{concurrency}" if concurrency else "")


def export(csv_path: Path, options: SlurmOptions, settings: Settings, output: Path | None = None) -> SlurmExport:
    """`sweepctl export slurm`: plan the array, then write the manifest and the job script."""
    return write(prepare(csv_path, options, settings), output)


def prepare(csv_path: Path, options: SlurmOptions, settings: Settings) -> launch.LaunchPreview:
    """launch.prepare for an array of one-row tasks of `gpus_per_task` GPUs each; writes nothing."""
    sweep = read_sweep(csv_path, name=options.name)
    most = max((r.gpus for r in sweep.runs), default=1)
    k = options.gpus_per_task or most
    problems = [f"{sweep.csv_path}:{r.line}: {r.run_id!r} asks for {r.gpus} GPUs but each array task gets "
                f"{k}; use --gpus-per-task {r.gpus}" for r in sweep.runs if r.gpus > k]
    if k < 1:
        problems.insert(0, f"{sweep.csv_path}:1: --gpus-per-task must be at least 1 (got {k})")
    if options.concurrency is not None and options.concurrency < 1:
        problems.insert(0, f"{sweep.csv_path}:1: --concurrency must be at least 1 (got {options.concurrency})")
    if problems:
        raise SpecError(problems)
    options = replace(options, shards=1, schedule="dynamic", gpus_per_shard=k, gpus_per_task=k)
    return launch.prepare(csv_path, options, settings, checks=on_the_cluster)


def on_the_cluster(plan: Plan, out_root: Path) -> tuple[GpuQuery, list[launch.Check]]:
    """The array runs on the cluster's nodes: this machine's GPUs and tmux say nothing about them.
    Data and out-root usually sit on a shared filesystem, so their checks still warn early."""
    return GpuQuery([]), launch.storage_checks(plan, out_root)


def write(preview: launch.LaunchPreview, output: Path | None = None) -> SlurmExport:
    """The manifest (launch.json records the script) and the executable job script."""
    assert isinstance(preview.options, SlurmOptions)
    options = preview.options
    # sbatch runs the array whatever this machine sees: a failed check is a warning, not a refusal
    warnings = [f"{c.what}: {c.detail}" + (f" — {c.hint}" if c.hint else "") for c in preview.checks if not c.ok]
    warnings += [f"{r}; the array tasks skip them" + ("" if options.retry_failed else " (--retry-failed runs them)")
                 for r in preview.refusals if "failed run" in r]
    script = (output or preview.sweep_dir / f"{preview.sweep.name}.sbatch").absolute()
    preview.options = options = replace(options, script=str(script))
    launched_at = time.time()
    launch_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(launched_at)) + f"-{os.getpid()}"
    text = render(preview, options)  # first: a path no #SBATCH line can hold leaves nothing half written
    launch.write_manifest(preview, launch_id=launch_id, launched_at=launched_at, shards=[])
    (preview.sweep_dir / SLURM_LOG_DIR).mkdir(parents=True, exist_ok=True)
    write_text_atomic(script, text, mode=0o755)
    return SlurmExport(preview, script, len(preview.plan.runs), array_spec(len(preview.plan.runs), options.concurrency),
                       warnings)


def runner_words(preview: launch.LaunchPreview, options: SlurmOptions) -> list[str]:
    """The runner's fixed arguments; the per-task ones ($row, devices, time) are added in the script."""
    words = ["-m", "sweepctl", "runner", str(preview.sweep_dir), "--max-retries", str(options.max_retries),
             "--stale-after", repr(preview.settings.stale_after_s)]
    return words + launch.runner_policy_flags(retry_failed=options.retry_failed,
                                              stall_after_s=options.stall_after_s,
                                              run_timeout_s=options.run_timeout_s)


def render(preview: launch.LaunchPreview, options: SlurmOptions) -> str:
    """The sbatch script. Directives are comments to bash, so `bash SCRIPT` with SLURM_ARRAY_TASK_ID
    set runs one task here — how the tests (and a user checking a row) run it."""
    name = preview.sweep.name
    rows = len(preview.plan.runs)
    logs = preview.sweep_dir / SLURM_LOG_DIR
    q = shlex.quote
    order = task_rows(preview.plan)
    script = q(str(options.script))
    if options.retry_failed:
        resubmit = "Submitting this again runs every row that is not ok, resuming from checkpoints."
    else:
        resubmit = ("Submitting this again runs the rows not started and resumes stale ones; it skips failed rows,\n"
                    "# and rows that scancel or a time limit interrupted. To resume those too, write it again with:\n"
                    f"#   {export_command(preview, options, retry_failed=True)}")
    return f"""#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --array={array_spec(rows, options.concurrency)}
#SBATCH --gres=gpu:{options.gpus_per_task}
#SBATCH --output={directive_value(output_pattern(logs), options.script)}
#
# Sweep {name}: {rows} rows. Array task I runs row ${{rows_by_task[I]}} (0-based, CSV order): the
# rows longest first, since Slurm starts tasks in index order. Each task runs the shard runner's
# per-row code path: run lock, run table (ok rows are skipped, stale ones resumed), trainer,
# stdout.log, summary.json. {resubmit}
# Written by `sweepctl export slurm` (sweepctl {__version__}) from {preview.sweep.csv_path.absolute()}.
#   submit: sbatch {script}
#   watch:  sweepctl status --out-root {q(str(preview.out_root))} --sweep {name}
#   one task here, without Slurm: SLURM_ARRAY_TASK_ID=0 bash {script}
set -euo pipefail
rows_by_task=({" ".join(str(i) for i in order)})
task="${{SLURM_ARRAY_TASK_ID:?set by sbatch --array: the task index}}"
row="${{rows_by_task[$task]:?no such task: the --array range must match the plan; export the script again}}"
# The interpreter that has sweepctl; override with SWEEPCTL_PYTHON=... (e.g. sbatch --export=ALL,SWEEPCTL_PYTHON=...).
# (A default inside "${{...:-...}}" would keep its quotes: a path with a space needs its own word.)
exporting_python={q(sys.executable)}
python="${{SWEEPCTL_PYTHON:-$exporting_python}}"
# Slurm sets CUDA_VISIBLE_DEVICES for --gres=gpu; the runner passes it on and the trainer records it.
devices="${{CUDA_VISIBLE_DEVICES:-${{SLURM_JOB_GPUS:-}}}}"
exec "$python" {shlex.join(runner_words(preview, options))} \\
    --row-index "$row" --devices "$devices" --session "slurm-$row" --launched-at "$(date +%s)"
"""


def export_command(preview: launch.LaunchPreview, options: SlurmOptions, *, retry_failed: bool) -> str:
    """The `sweepctl export slurm` that writes this script again (the same plan, array and path)."""
    words = ["sweepctl", "export", "slurm", str(preview.sweep.csv_path.absolute()), "--name", preview.sweep.name,
             "--out-root", str(preview.out_root), "--data-dir", str(Path(preview.settings.data_dir).absolute()),
             "--gpus-per-task", str(options.gpus_per_task)]
    words += ["--concurrency", str(options.concurrency)] if options.concurrency else []
    words += ["--max-retries", str(options.max_retries)] if options.max_retries else []
    words += ["--no-wandb"] if options.no_wandb else []
    words += ["--retry-failed"] if retry_failed else []
    return shlex.join([*words, "-o", str(options.script)])


def output_pattern(logs: Path) -> str:
    """--output's value: one file per task, `<job>_<task>.out`. sbatch reads `%` in it as a pattern
    character, so a `%` in the folder's name is written `%%`."""
    return str(logs).replace("%", "%%") + "/%A_%a.out"


def directive_value(value: str, script: str | None) -> str:
    """`value` as an #SBATCH line holds it. sbatch (not bash) reads these lines: it splits them at
    whitespace unless the value is in quotes, and reads no escapes inside them (tried on Slurm 22.05)."""
    if not any(c.isspace() or c in "'\"" for c in value):
        return value
    if '"' in value or "\n" in value:
        raise SweepctlError(f"an #SBATCH line cannot hold the path {value!r} (a double quote or a newline in it)",
                            where=script, hint="choose an --out-root without them")
    return f'"{value}"'


def task_rows(plan: Plan) -> list[int]:
    """The row index each array task runs, task 0 first: longest rows first."""
    index = {r.run_id: r.row_index for r in plan.runs}
    return [index[run_id] for run_id in claim_order(plan)]


def run_id_of_row(plan: Plan, row_index: int, sweep_dir: Path) -> str:
    """The run of row `row_index` (0-based, CSV order): what array task $SLURM_ARRAY_TASK_ID runs."""
    for r in plan.runs:
        if r.row_index == row_index:
            return r.run_id
    raise SweepctlError(f"no row {row_index}: the sweep has rows 0-{len(plan.runs) - 1}", where=str(sweep_dir),
                        hint="the --array range must match the plan; export the script again")
