"""The run contract: what a trainer leaves in its run directory, and what the launcher tells it.

Both sides read this one module: the trainer writes these files, the runner, `status`, `report`
and `control` read them. Standard library only, so the orchestration side can import it without
torch (tests/test_layout.py checks that).

    from sweepctl.train.contract import SUMMARY
    summary_path = run_dir / SUMMARY
"""

from __future__ import annotations

CONTRACT_VERSION = 1  # in run_metadata.json and summary.json; raise it when a file below changes meaning
RUN_KIND = "sweepctl.train"
# JSON {"sweep": {name, row_index, shard_index, ...}, "attempt": n} from the launcher to the trainer,
# recorded in run_metadata.json so a run directory says which sweep row made it.
CONTEXT_ENV = "SWEEPCTL_RUN_CONTEXT"

# The trainer's files.
STDOUT_LOG = "stdout.log"  # the runner's tee of the trainer's output
COMMAND = "command.sh"
METADATA = "run_metadata.json"
CONFIG_EFFECTIVE = "config_effective.json"
DATASET_MANIFEST = "dataset_manifest.json"
METRICS = "metrics.jsonl"
HEARTBEAT = "heartbeat.json"
CHECKPOINT = "ckpt.pt"
SUMMARY = "summary.json"
# The runner's files: who owns the run now (and owned it last), and the lock that proves it.
OWNER = "runner.json"
LOCK = ".sweepctl.lock"

# A complete, finished run directory has these.
COMPLETE_FILES = (STDOUT_LOG, COMMAND, METADATA, CONFIG_EFFECTIVE, DATASET_MANIFEST, METRICS, HEARTBEAT,
                  CHECKPOINT, SUMMARY)

