"""The bundled trainer: nanoGPT with plain, HC and mHC residual streams, writing the run contract.

    python -m sweepctl.train CONFIG [key=value ...]      # see sweepctl/train/train.py

Modules: config (TrainConfig, presets, overrides; no torch), hyper (residual connections and the
H_res projections), model (GPT), data (FineWeb shards), train (the loop and the run directory).
Importing this package imports nothing heavy: the CLI validates configs without torch.
"""
