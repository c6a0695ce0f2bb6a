"""The bundled trainer: nanoGPT with plain, HC and mHC residual streams, writing the run contract.

    python -m sweepctl.train CONFIG [key=value ...]      # see sweepctl/train/train.py

Modules: contract (the run directory's file names, CONTRACT_VERSION, the context variable; shared
with the orchestration side; standard library only), config (TrainConfig, presets, overrides; no
torch), hyper (residual connections and the H_res projections), model (GPT), data (FineWeb
shards), diagnostics (residual-map stats), rundir (secret-free writes, heartbeat, provenance),
train (the loop and what it records).
Importing this package imports nothing heavy: the CLI validates configs without torch.
"""
