"""The bundled trainer: nanoGPT with plain, HC and mHC residual streams, writing the run contract.

    python -m sweepctl.train CONFIG [key=value ...]      # see sweepctl/train/train.py

Modules: config (TrainConfig, presets, overrides; no torch), hyper (residual connections and the
H_res projections), model (GPT), data (FineWeb shards), diagnostics (residual-map stats), rundir
(atomic secret-free writes, heartbeat, provenance), train (the loop and what it records).
Importing this package imports nothing heavy: the CLI validates configs without torch.
"""
