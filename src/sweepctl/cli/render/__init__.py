"""What the command line prints, in one place: each view drawn from a plain dict (the same dict a
command's `--json` prints, so a `--host` answer from a pod is drawn by the same function).

    run       launch (pre-flight, run table, what started), stop, rerun, an empty status
    sweep     validate, plan, presets
    watch     `status --watch`: redrawn in place, or a line per change in a pipe
    report    report tables, markdown, CSV, JSON
    answers   every pod's answer to a command run on several pods
    pod       bootstrap's checklist, `data fineweb`, `data prepare`
    steer     cancel, prioritize
    cluster   `ray up`, `export slurm`
    pull      what `pull` copied
    settings  `config`
    demo      the demo's pre-flight, live view and next steps

Command modules (cli/*_cmds.py) parse options, call the library and hand its data to one of these;
they import no rendering library themselves (tests/test_layout.py).
"""
