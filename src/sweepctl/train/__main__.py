"""`python -m sweepctl.train CONFIG [key=value ...]`: see sweepctl/train/train.py."""

import os
import sys

from sweepctl.train.train import main

code = main()
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    # A torchrun rank leaves without the interpreter's own teardown: once the process group is
    # destroyed and every file closed (main's finally), what is left is C++ static destruction, where
    # gloo can abort on a still-joinable thread ("terminate called without an active exception",
    # SIGABRT in about 1 run in 30 of a 2-rank CPU run), and torchrun then fails a run that finished.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
raise SystemExit(code)
