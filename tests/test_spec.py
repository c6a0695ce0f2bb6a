"""Sweep CSV validation and planning: every bad input is refused at FILE:LINE, nothing is created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cli import run_cli
from sweepctl.sweep.spec import read_sweep
from sweepctl.train.config import PRESETS, TrainConfig

HEADER = "run_id,config,seed,overrides,notes\n"


@pytest.fixture()
def sweep_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with nothing in it but what the test writes; settings isolated."""
    monkeypatch.chdir(tmp_path)
    for var in ("SWEEPCTL_OUT_ROOT", "SWEEPCTL_DATA_DIR", "FINEWEB10B_LOCAL_DIR", "SWEEPCTL_HOST",
                "SWEEPCTL_PROJECT_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWEEPCTL_VOLUME", str(tmp_path / "no-volume"))
    return tmp_path


def write(path: Path, text: str, *, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode())
    return path


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


BAD_ROWS = [
    # (name, csv text after the header, expected line, expected message fragment)
    ("duplicate run_id", "a,base,1,,\nb,base,2,,\na,base,3,,\n", 4, "duplicate run_id 'a' (first at line 2)"),
    ("run_id with slash", "a/b,base,1,,\n", 2, "not a safe directory name"),
    ("run_id with dotdot", "..,base,1,,\n", 2, "not a safe directory name"),
    ("empty run_id", ",base,1,,\n", 2, "empty run_id"),
    ("unknown override key", "a,base,1,learning_rat=1e-3,\n", 2, "did you mean 'learning_rate'?"),
    ("wrong type", "a,base,1,n_layer=6.0,\n", 2, "n_layer: Input should be a valid integer"),
    ("fractional max_iters", "a,base,1,max_iters=1.5,\n", 2, "max_iters: Input should be a valid integer"),
    ("negative size", "a,base,1,n_embd=-64,\n", 2, "n_embd: Input should be greater than 0"),
    ("override without =", "a,base,1,max_iters,\n", 2, "override 'max_iters' is not key=value"),
    ("missing config file", "a,configs/nope.py,1,,\n", 2, "config 'configs/nope.py' is neither a preset nor a file"),
    ("non-integer seed", "a,base,x1,,\n", 2, "seed 'x1' is not an integer"),
    ("bad enum value", "a,mhc,1,mhc_h_res_proj=sinkhorn2,\n", 2, "mhc_h_res_proj: Input should be 'sinkhorn' or 'orthostochastic'"),
    ("n_head not dividing n_embd", "a,base,1,n_head=5,\n", 2, "n_embd (288) must be divisible by n_head (5)"),
    ("override with code", "a,base,1,\"n_layer=__import__('os').getpid()\",\n", 2, "a function call is not allowed"),
    ("string field with code", "a,base,1,\"wandb_group=open('x').read()\",\n", 2, "a function call is not allowed"),
    ("truthy string for a bool", "a,base,1,wandb_log=yes,\n", 2,
     "overrides: wandb_log=yes: wandb_log needs true or false; 'yes' is neither that nor a name defined in the config file"),
    ("a word for a number", "a,base,1,batch_size=big,\n", 2,
     "overrides: batch_size=big: batch_size needs an integer; 'big' is neither that nor a name defined in the config file"),
    ("quoted number is a string", "a,base,1,batch_size='32',\n", 2,
     "overrides: batch_size='32' is quoted, so it is a string, but batch_size needs an integer: write batch_size=32"),
    ("key set twice in a row", "a,base,1,\"max_iters=10 batch_size=4 max_iters=20\",\n", 2,
     "overrides: max_iters is set twice (max_iters=10, then max_iters=20); keep one"),
    ("quoted bool is a string", "a,base,1,\"wandb_log=\"\"'false'\"\"\",\n", 2, "wandb_log: Input should be a valid boolean"),
    ("unbalanced quote", "a,base,1,\"max_iters=3,\n", 2, "malformed CSV"),
    ("unbalanced quote in overrides", "a,base,1,\"wandb_group='abc\",\n", 2, "No closing quotation"),
    ("out_dir is sweepctl's", "a,base,1,out_dir=/tmp/x,\n", 2, "override 'out_dir' is not allowed here"),
    ("min_lr above lr", "a,base,1,min_lr=1e-2,\n", 2, "min_lr (0.01) must be <= learning_rate"),
    ("too many fields", "a,base,1,,,extra\n", 2, "6 fields but the header has 5"),
    ("gpus not a number", None, 2, "gpus 'two' is not a positive integer"),
]


@pytest.mark.parametrize(("name", "rows", "line", "fragment"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_input_is_refused_at_its_line_and_nothing_is_created(sweep_dir, capsys, name, rows, line, fragment):
    text = "run_id,config,seed,overrides,notes,gpus\na,base,1,,,two\n" if rows is None else HEADER + rows
    csv_path = write(sweep_dir / "sweep.csv", text)
    before = listing(sweep_dir)
    for command in (["validate", "sweep.csv"], ["plan", "sweep.csv", "--shards", "2"]):
        result = run_cli(capsys, *command)
        assert result.code == 1, result
        assert f"sweep.csv:{line}: " in result.err
        expected = [ln for ln in result.err.splitlines() if f"sweep.csv:{line}: " in ln]
        assert any(fragment in ln for ln in expected), result.err
        assert "Traceback" not in result.err
    assert listing(sweep_dir) == before
    assert csv_path.exists()


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("config,seed,overrides,notes\nbase,1,,\n", "sweep.csv:1: missing column 'run_id'"),
        (HEADER, "sweep.csv:1: no rows"),
        ("", "sweep.csv:1: empty file"),
        ("run_id,config,seed,overides\na,base,1,\n", "sweep.csv:1: unknown column 'overides'; did you mean 'overrides'?"),
    ],
    ids=["missing run_id column", "header only", "empty", "misspelled column"],
)
def test_file_level_problems_are_line_one(sweep_dir, capsys, text, fragment):
    write(sweep_dir / "sweep.csv", text)
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert fragment in result.err


def test_every_problem_is_reported_at_once(sweep_dir, capsys):
    write(sweep_dir / "sweep.csv", HEADER + "a,base,1,,\nb/c,base,1,,\nd,base,x,,\ne,base,1,max_iters=1.5,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    lines = [ln for ln in result.err.splitlines() if ln.startswith("error: sweep.csv:")]
    assert [ln.split(":")[2] for ln in lines] == ["3", "4", "5"]
    assert "3 problem(s); nothing was started." in result.err


def test_config_file_with_code_is_refused_and_never_executed(sweep_dir, capsys):
    marker = sweep_dir / "PWNED"
    write(sweep_dir / "configs" / "evil.py", textwrap.dedent(f"""\
        n_layer = 4
        import os
        os.system("touch {marker}")
        """))
    write(sweep_dir / "sweep.csv", HEADER + "a,configs/evil.py,1,,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert "configs/evil.py:2: only `name = literal` assignments are allowed" in result.err
    assert "sweep.csv:2:" in result.err
    assert not marker.exists()

    write(sweep_dir / "configs" / "call.py", f'n_layer = 4\nout_dir = open("{marker}", "w").name\n')
    write(sweep_dir / "sweep.csv", HEADER + "a,configs/call.py,1,,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert "call.py:2: attribute access is not allowed in a config file (not executed)" in result.err
    assert not marker.exists()


def test_unknown_key_in_config_file_names_file_and_line(sweep_dir, capsys):
    write(sweep_dir / "c.py", "n_layer = 4\nlearning_rte = 1e-3\n")
    write(sweep_dir / "sweep.csv", HEADER + "a,c.py,1,,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert "c.py:3: " not in result.err
    assert "c.py:2: unknown setting 'learning_rte'; did you mean 'learning_rate'?" in result.err


def test_awkward_but_good_input(sweep_dir, capsys):
    write(sweep_dir / "cfg" / "mhc.py", textwrap.dedent("""\
        # a nanoGPT-style config: literals, tuples, earlier names, len(NAME)
        n_layer = 4
        hc_disable = False
        hc_num_streams = 4
        mhc = True
        MY_COEFFS = ((3.0, -3.2, 1.2), (3.0, -3.2, 1.2), (2.0, -1.5, 0.5))
        ns_coeffs = MY_COEFFS
        ns_steps = len(MY_COEFFS)
        max_iters = 100 * 10
        lr_decay_iters = max_iters
        """))
    text = (
        "run_id,config,seed,overrides,notes\n"
        'a-s1,cfg/mhc.py,1,"mhc_h_res_proj=\'orthostochastic\' wandb_log=false","plain, with a comma"\n'
        "a-s2,cfg/mhc.py,2,\"wandb_run_name='$(touch PWNED); rm -rf /' WANDB_LOG=1\",\n"
        "b-s1,mhc,1,ns_coeffs=MY_COEFFS,\n"
        "\n\n"
    )
    write(sweep_dir / "sweep.csv", "\ufeff" + text, newline="\r\n")
    # MY_COEFFS is only defined in the config file, so the preset row cannot reference it
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert "sweep.csv:3: overrides: unknown setting 'WANDB_LOG'" in result.err
    assert "sweep.csv:4: overrides: ns_coeffs=MY_COEFFS: unknown name 'MY_COEFFS'" in result.err

    text = text.replace(" WANDB_LOG=1", "").replace("b-s1,mhc,1,ns_coeffs=MY_COEFFS,", "b-s1,mhc,1,,")
    write(sweep_dir / "sweep.csv", "\ufeff" + text, newline="\r\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 0, result.err
    sweep = read_sweep(sweep_dir / "sweep.csv")
    a1, a2, b1 = sweep.runs
    assert a1.config.wandb_log is False and a1.config.mhc_h_res_proj == "orthostochastic"
    assert a1.notes == "plain, with a comma"
    assert a1.config.ns_steps == 3 and a1.config.ns_coeffs[2] == (2.0, -1.5, 0.5)
    assert a1.config.max_iters == 1000 and a1.config.lr_decay_iters == 1000
    assert a2.config.wandb_run_name == "$(touch PWNED); rm -rf /"
    assert b1.config == TrainConfig(**PRESETS["mhc"], seed=1)
    assert [r.line for r in sweep.runs] == [2, 3, 4]
    assert not (sweep_dir / "PWNED").exists()


def test_multiline_quoted_field_keeps_the_row_line(sweep_dir):
    write(sweep_dir / "sweep.csv", HEADER + 'a,base,1,,"two\nlines"\nb,base,1,max_iters=1.5,\n')
    with pytest.raises(Exception) as e:
        read_sweep(sweep_dir / "sweep.csv")
    assert "sweep.csv:4: max_iters" in str(e.value)


def test_toml_config_and_its_line_numbers(sweep_dir, capsys):
    write(sweep_dir / "c.toml", 'n_layer = 4\nhc_disable = false\nhc_num_streams = 2\nn_head = "six"\n')
    write(sweep_dir / "sweep.csv", HEADER + "a,c.toml,1,,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 1
    assert "sweep.csv:2: n_head: Input should be a valid integer (got 'six') (" in result.err
    assert "c.toml:4)" in result.err
    write(sweep_dir / "c.toml", 'n_layer = 4\nhc_disable = false\nhc_num_streams = 2\nns_coeffs = [[1.0, 2.0, 3.0]]\nns_steps = 1\n')
    sweep = read_sweep(sweep_dir / "sweep.csv")
    assert sweep.runs[0].config.hc_num_streams == 2
    assert sweep.runs[0].config.ns_coeffs == ((1.0, 2.0, 3.0),)


def test_duplicate_effective_config_warns_but_seed_replicates_do_not(sweep_dir, capsys):
    write(sweep_dir / "sweep.csv", HEADER + "a-s1,hc,1,,\na-s2,hc,2,,\nb-s1,hc,1,wandb_log=False,\n")
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 0
    warnings = [ln for ln in result.err.splitlines() if "warning" in ln]
    assert warnings == ["sweep.csv:4: warning: 'b-s1' has the same effective config as 'a-s1' (line 2); "
                        "did an override not take effect?"]


def test_plan_static_sharding_and_json_shape(sweep_dir, capsys):
    rows = "".join(f"r{i},base,{i},,\n" for i in range(7))
    write(sweep_dir / "sweep.csv", HEADER + rows)
    result = run_cli(capsys, "plan", "sweep.csv", "--shards", "3", "--gpus-per-shard", "2", "--json",
                     "--out-root", "/o", "--data-dir", "/d")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    assert set(plan) == {"sweep", "shard_count", "schedule", "shards", "runs"}
    assert plan["sweep"] == "sweep" and plan["shard_count"] == 3 and plan["schedule"] == "static"
    assert [s["devices"] for s in plan["shards"]] == [[0, 1], [2, 3], [4, 5]]
    assert plan["shards"][1]["run_ids"] == ["r1", "r4"]
    for i, run in enumerate(plan["runs"]):
        assert set(run) == {"run_id", "line", "row_index", "shard", "seed", "gpus", "priority", "config", "argv"}
        assert run["row_index"] == i and run["shard"] == i % 3 and run["line"] == i + 2
        assert set(run["config"]) == set(TrainConfig.model_fields)
        assert run["config"]["out_dir"] == f"/o/r{i}" and run["config"]["data_dir"] == "/d"
        assert run["argv"][:4] == ["python", "-m", "sweepctl.train", "base"]
        assert f"seed={i}" in run["argv"] and f"out_dir=/o/r{i}" in run["argv"]
    assert not (sweep_dir / "o").exists()


def test_plan_dynamic_and_human_output(sweep_dir, capsys):
    write(sweep_dir / "sweep.csv", HEADER + "a,base,1,wandb_log=true,\nb,hc,1,,\n")
    result = run_cli(capsys, "plan", "sweep.csv", "--shards", "2", "--schedule", "dynamic", "--json")
    plan = json.loads(result.out)
    assert [r["shard"] for r in plan["runs"]] == [None, None]
    assert "wandb_log=True" in plan["runs"][0]["argv"]  # a Python literal, never a lowercase word
    result = run_cli(capsys, "plan", "sweep.csv", "--shards", "2")
    assert result.code == 0
    assert "shard 0 (sweep-0) CUDA_VISIBLE_DEVICES=0: 1 run" in [ln.rstrip() for ln in result.out.splitlines()]
    assert "CUDA_VISIBLE_DEVICES=1 python -m sweepctl.train hc seed=1" in result.out.replace("\n│", "")


def test_row_asking_for_more_gpus_than_a_shard_has(sweep_dir, capsys):
    write(sweep_dir / "sweep.csv", "run_id,config,seed,overrides,notes,gpus\na,base,1,,,2\n")
    result = run_cli(capsys, "plan", "sweep.csv", "--shards", "1")
    assert result.code == 1
    assert "sweep.csv:2: 'a' asks for 2 GPUs but each shard has 1; use --gpus-per-shard 2" in result.err


def test_reference_sweep_validates_and_plans_unchanged(sweep_dir, capsys):
    """A CSV in the reference scripts' style, with their config files and override style."""
    ref = sweep_dir / "examples" / "nanogpt" / "config"
    common = textwrap.dedent("""\
        out_dir = "out-fineweb10B"
        wandb_run_name = "run"
        dataset = "fineweb10B"
        block_size = 1024
        n_layer = 6
        n_head = 6
        n_embd = 288
        dropout = 0.0
        bias = False
        batch_size = 32
        gradient_accumulation_steps = 4
        max_iters = 5000
        eval_interval = 500
        log_interval = 10
        eval_iters = 100
        learning_rate = 6e-4
        weight_decay = 0.1
        beta1 = 0.9
        beta2 = 0.95
        grad_clip = 1.0
        warmup_iters = 200
        lr_decay_iters = 5000
        min_lr = 6e-5
        dtype = "bfloat16"
        """)
    write(ref / "train_fineweb10B.py", common + "hc_num_streams = 1\nhc_disable = True\n")
    write(ref / "train_fineweb10B_mhc.py", common + textwrap.dedent("""\
        hc_num_streams = 4
        hc_num_fracs = 1
        hc_disable = False
        mhc = True
        sinkhorn_iters = 10
        sinkhorn_tau = 0.05
        mhc_residual_identity_mix = False
        mhc_residual_alpha = 0.9
        """))
    write(ref / "train_fineweb10B_cvres_mhc_48l.py", common.replace("n_layer = 6", "n_layer = 48")
          .replace("n_embd = 288", "n_embd = 150") + textwrap.dedent("""\
        hc_num_streams = 4
        hc_disable = False
        mhc = True
        mhc_h_res_proj = "sinkhorn"
        ns_steps = 5
        ns_eps = 1e-7
        ns_coeffs = (3.0, -3.2, 1.2)
        v_residual = True
        v_residual_constrained = True
        v_residual_lamb_lr = 1e-2
        """))
    rows = []
    for seed in (1337, 1338, 1339):
        rows.append(f"fineweb10B-base-6l-default-s{seed},config/train_fineweb10B.py,{seed},,")
        rows.append(f"fineweb10B-mhc-6l-default-s{seed},config/train_fineweb10B_mhc.py,{seed},,")
        rows.append(f"fineweb10B-mhc-6l-orthostochastic-ns-schedule-s{seed},config/train_fineweb10B_mhc.py,{seed},"
                    "\"mhc_h_res_proj='orthostochastic' ns_coeffs=NS_COEFFS ns_steps=len(NS_COEFFS)\",")
        rows.append(f"fineweb10B-mhc-6l-identity-mix-s{seed},config/train_fineweb10B_mhc.py,{seed},"
                    "\"mhc_residual_identity_mix=True mhc_residual_alpha=0.01\",")
        rows.append(f"fineweb10B-cvres-mhc-48l-default-s{seed},config/train_fineweb10B_cvres_mhc_48l.py,{seed},,")
    write(sweep_dir / "examples" / "nanogpt" / "sweep.csv", HEADER + "\n".join(rows) + "\n")
    os.chdir(sweep_dir / "examples" / "nanogpt")  # the reference scripts ran from here
    result = run_cli(capsys, "validate", "sweep.csv")
    assert result.code == 0, result.err
    assert "warning" not in result.err
    result = run_cli(capsys, "plan", "sweep.csv", "--shards", "8", "--json")
    plan = json.loads(result.out)
    assert len(plan["runs"]) == 15
    ortho = plan["runs"][2]
    assert ortho["config"]["ns_steps"] == 8 and len(ortho["config"]["ns_coeffs"]) == 8
    assert ortho["config"]["mhc_h_res_proj"] == "orthostochastic"
    assert plan["runs"][4]["config"]["v_residual_constrained"] is True
    assert [s["run_ids"][0] for s in plan["shards"]] == [r["run_id"] for r in plan["runs"][:8]]


def test_presets_and_config_commands(sweep_dir, capsys, monkeypatch):
    result = run_cli(capsys, "presets")
    assert result.code == 0
    for name in ("base", "hc", "mhc", "vres", "vres_mhc", "cvres_mhc", "mhc_48l", "cvres_mhc_48l"):
        assert f"│ {name} " in result.out
    assert PRESETS["mhc_48l"]["batch_size"] == PRESETS["hc_48l"]["batch_size"] == 16  # equal tokens per iteration
    assert PRESETS["mhc"]["sinkhorn_iters"] == 20

    write(sweep_dir / "sweepctl.toml", 'out_root = "/from/file"\ndata_dir = "/file/data"\n')
    monkeypatch.setenv("FINEWEB10B_LOCAL_DIR", "/env/data")
    result = run_cli(capsys, "config", "--host", "pod")
    assert result.code == 0
    text = " ".join(result.out.split())
    assert "out_root │ /from/file │ project file" in text
    assert "data_dir │ /env/data │ env FINEWEB10B_LOCAL_DIR" in text
    assert "host │ pod │ flag" in text
    assert "stale_after_s │ 120.0 │ default" in text


def test_help_is_instant_and_imports_no_heavy_library():
    code = ("import sys; sys.argv=['sweepctl','--help']\n"
            "from sweepctl.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch','numpy','paramiko','libtmux','huggingface_hub','tiktoken','matplotlib')"
            " if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr


def test_rows_that_share_a_template_validate_as_each_row_alone(sweep_dir, capsys, monkeypatch):
    """read_sweep validates a row field by field against an earlier row with the same keys
    (spec._Configs): every config, and every message, is what validating the row whole gives."""
    from sweepctl.sweep import spec
    from sweepctl.train.config import resolve_config

    assert spec._fast_path() is not None  # TrainConfig's schema still allows it (else every row is slow)
    write(sweep_dir / "c.py", "n_layer = 2\nNS = (1.0, 2.0, 3.0)\nns_coeffs = NS\nns_steps = 1\n")
    good = HEADER + "".join([
        "a-s1,base,1,learning_rate=1e-3,\n", "a-s2,base,2,learning_rate=2e-3,\n", "a-s3,base,3,learning_rate=1,\n",
        "a-s4,base,4,\"learning_rate=2e-3 dropout=-0.0\",\n", "a-s5,base,5,\"learning_rate=2e-3 dropout=0.0\",\n",
        "b-s1,c.py,1,\"ns_coeffs=NS device='cpu'\",\n", "b-s2,c.py,2,\"ns_coeffs='(1, 2, 3)' device=cpu\",\n",
        "b-s3,c.py,3,\"ns_coeffs=NS device=None\",\n",
        "m-s1,mhc,1,\"wandb_group=g-1 mhc_h_res_proj='orthostochastic'\",\n",
        "m-s2,mhc,2,\"wandb_group=g-2 mhc_h_res_proj=sinkhorn\",\n"])
    write(sweep_dir / "good.csv", good)
    for run in read_sweep(sweep_dir / "good.csv").runs:
        whole = resolve_config(str(sweep_dir / "c.py") if run.config_ref == "c.py" else run.config_ref,
                               [f"seed={run.seed}", *run.override_words])
        assert run.config == whole and run.config.model_fields_set == whole.model_fields_set, run.run_id
        assert [type(v) for v in run.config.__dict__.values()] == [type(v) for v in whole.__dict__.values()]
        assert run.config.model_dump_json() == whole.model_dump_json(), run.run_id  # -0.0 stays -0.0
    bad = HEADER + "".join([
        "a-s1,base,1,learning_rate=1e-3,\n", "a-s2,base,2,learning_rate=1e-6,\n", "a-s3,base,3,learning_rate=-1,\n",
        "a-s4,base,4,learning_rate=True,\n", "a-s5,base,5,\"learning_rate=2e-3 dropout=0.5\",\n",
        "a-s6,base,6,\"learning_rate=2e-3 dropout=1.0\",\n", "h-s1,hc,1,n_head=4,\n", "h-s2,hc,2,n_head=5,\n",
        "d-s1,base,1,device=cpu,\n", "d-s2,base,2,device=tpu,\n"])
    write(sweep_dir / "bad.csv", bad)
    expected = [
        "error: bad.csv:3: min_lr (6e-05) must be <= learning_rate (1e-06)",
        "error: bad.csv:4: learning_rate: Input should be greater than 0 (got -1)",
        "error: bad.csv:5: learning_rate: Input should be a valid number (got True)",
        "error: bad.csv:7: dropout: Input should be less than 1 (got 1.0)",
        "error: bad.csv:9: n_embd (288) must be divisible by n_head (5)",
        "error: bad.csv:11: device must be cpu, mps, cuda or cuda:N, got 'tpu'",
        "6 problem(s); nothing was started.",
    ]
    result = run_cli(capsys, "validate", "bad.csv")
    assert (result.code, result.out, result.err.splitlines()) == (1, "", expected)
    monkeypatch.setattr(spec, "_fast_path", lambda: None)  # every row validated whole
    assert run_cli(capsys, "validate", "bad.csv").err.splitlines() == expected


def test_plan_json_holds_each_rows_trainer_config_and_reads_back_byte_for_byte(sweep_dir, tmp_path):
    """A plan row's config is a TrainConfig in memory and, in plan.json, exactly the settings the
    trainer resolves from the row's own command; reading plan.json back and writing it again
    changes no byte (a live queue's rows are rewritten this way)."""
    from sweepctl.state import manifest
    from sweepctl.sweep.plan import make_plan
    from sweepctl.train.config import resolve_config

    write(sweep_dir / "c.py", "n_layer = 2\nhc_disable = False\nhc_num_streams = 2\nmhc = True\n")
    write(sweep_dir / "sweep.csv", HEADER + "a-s1,base,1,\"learning_rate=1 dropout=-0.0 wandb_run_name=x\",\n"
          "b-s1,c.py,1,\"ns_coeffs=NS_COEFFS ns_steps=8 mhc_h_res_proj='orthostochastic'\",\nc-s1,hc_48l,2,,\n")
    plan = make_plan(read_sweep(sweep_dir / "sweep.csv"), shards=2, out_root="/o", data_dir="/d", no_wandb=True)
    assert all(isinstance(r.config, TrainConfig) for r in plan.runs)
    d = tmp_path / "m"
    manifest.write_plan(d, plan)
    text = (d / "plan.json").read_text()
    on_disk = json.loads(text)
    for row, run in zip(on_disk["runs"], plan.runs, strict=True):
        trainer = resolve_config(run.argv[3], run.argv[4:], base_dir=sweep_dir)
        assert row["config"] == trainer.model_dump(mode="json") == json.loads(trainer.model_dump_json())
        assert list(row["config"]) == list(TrainConfig.model_fields)
    assert on_disk["runs"][0]["config"]["dropout"] == -0.0 and on_disk["runs"][0]["config"]["wandb_run_name"] == "x"
    again = manifest.read_plan(d)
    assert again == plan
    manifest.save_plan(d, again)
    assert (d / "plan.json").read_text() == text


def test_a_plan_json_from_another_version_reads_or_says_what_to_do(sweep_dir, capsys):
    """A setting this version lacks is left out (the row's command, which the trainer checks, is
    what runs); one it cannot read names the file and the command that relaunches the sweep."""
    from sweepctl.state import manifest, runs
    from sweepctl.sweep.plan import make_plan

    write(sweep_dir / "sweep.csv", HEADER + "a-s1,base,1,,\n")
    out = sweep_dir / "out"
    d = manifest.sweep_dir(out, "sweep")
    manifest.write_plan(d, make_plan(read_sweep(sweep_dir / "sweep.csv"), shards=1, out_root=out))
    runs.write_json_atomic(d / "launch.json", {"ts": 1.0})
    data = json.loads((d / "plan.json").read_text())
    data["runs"][0]["config"]["a_setting_from_the_future"] = 3
    (d / "plan.json").write_text(json.dumps(data))
    plan, _ = manifest.load_manifest(out, "sweep")
    assert plan.runs[0].config.out_dir == str(out / "a-s1")
    data["runs"][0]["config"]["n_layer"] = "six"
    (d / "plan.json").write_text(json.dumps(data))
    result = run_cli(capsys, "status", "--out-root", str(out))
    assert (result.code, result.out) == (1, "")
    assert result.err == (
        f"error: {d / 'plan.json'}: sweep 'sweep': plan.json does not read as a plan (runs.0.config.n_layer; "
        f"Input should be a valid integer [type=int_type, input_value='six', input_type=str]) — use the sweepctl "
        f"version that launched it, or relaunch its CSV: sweepctl launch {d / 'sweep.csv'} --out-root {out}\n")
