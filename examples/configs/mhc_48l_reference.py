"""The public mHC reference's own 48-layer mHC setting, for reproducing it exactly.

The reference ran its 48-layer mHC models at batch 24 for 6666 iterations (its plain, HC and value-
residual 48-layer models at batch 16 for 10000): about the same tokens, but a different batch size
and step count per variant. sweepctl's `*_48l` presets give every variant 16 x 4 x 1024 tokens per
iteration for 10000 iterations instead (docs/trainer.md, "How runs are compared"). Name this file in
a sweep CSV's `config` column to run the reference's setting:

    run_id,config,seed,overrides,notes
    mhc-48l-reference-s1337,examples/configs/mhc_48l_reference.py,1337,,the reference's batch and steps
"""

# model: 48 layers, 150 wide, 6 heads, 1024 tokens of context
n_layer = 48
n_head = 6
n_embd = 150
block_size = 1024
dropout = 0.0
bias = False

# 24 x 4 x 1024 = 98,304 tokens per iteration for 6666 iterations (655M tokens)
batch_size = 24
gradient_accumulation_steps = 4
max_iters = 6666
lr_decay_iters = 6666
warmup_iters = 200
learning_rate = 6e-4
min_lr = 6e-5
weight_decay = 0.1

eval_interval = 500
eval_iters = 100
eval_batch_size = 24  # the reference scored 100 val batches of its training batch size
log_interval = 10
dtype = "bfloat16"

# mHC as the reference implements it (docs/trainer.md, deviations): 4 residual streams, H_res
# projected by 10 Sinkhorn iterations at temperature 0.05 and used as they leave it (row sums then
# off by up to a few 1e-2 once trained), an RMSNorm before the dynamic branch, GPT-2's init for
# every output projection
hc_disable = False
hc_num_streams = 4
mhc = True
mhc_h_res_proj = "sinkhorn"
sinkhorn_iters = 10
sinkhorn_tau = 0.05
mhc_h_res_balance = False
hc_dynamic_norm = "rms"
hc_out_proj_init = "gpt2"
