"""`python -m sweepctl.train CONFIG [key=value ...]`: see sweepctl/train/train.py."""

from sweepctl.train.train import main

raise SystemExit(main())
