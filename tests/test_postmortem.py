"""Failures of the bash-script attempt (shared/seed/sweep_postmortem.md) that no other test file
proves impossible on its own. docs/postmortem.md maps every failure to what prevents it and to
the tests that prove it; tests/test_docs.py checks that those tests exist."""

from __future__ import annotations

from pathlib import Path

from sweepctl.sweep.plan import make_plan
from sweepctl.sweep.spec import read_sweep
from sweepctl.train.config import resolve_config


def test_no_wandb_wins_over_a_row_that_asks_for_wandb_in_the_trainers_own_reading(tmp_path: Path) -> None:
    """Postmortem 3: `--no-wandb` passed `wandb_log=false`, which nanoGPT's override parser did
    not read as a boolean, so W&B stayed on. Here the row itself asks for W&B (lowercase `true`,
    as people write it), the sweep is planned with no_wandb, and the planned command is read back
    by the trainer's own parser: W&B is off, and the word on the command line is a Python literal."""
    (tmp_path / "s.csv").write_text("run_id,config,seed,overrides,notes\n"
                                    "a-s1,base,1,\"wandb_log=true wandb_project='p'\",\n"
                                    "b-s1,base,1,,\n")
    sweep = read_sweep(tmp_path / "s.csv")
    assert sweep.runs[0].config.wandb_log is True  # lowercase true is a boolean, not a string

    for no_wandb, want in ((True, [False, False]), (False, [True, False])):
        plan = make_plan(sweep, shards=1, out_root=tmp_path / "out", no_wandb=no_wandb)
        for run, expected in zip(plan.runs, want, strict=True):
            argv = run.argv  # python -m sweepctl.train CONFIG words...
            assert argv[:3] == ["python", "-m", "sweepctl.train"]
            cfg = resolve_config(argv[3], argv[4:])
            assert cfg.wandb_log is expected and run.config.wandb_log is expected, (no_wandb, run.run_id)
            if no_wandb:
                assert argv[-1] == "wandb_log=False"  # last word wins; never `false`
