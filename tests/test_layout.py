"""The layout's rules, checked on the source: each outside library behind one module (or one
package), and a trainer that imports nothing from the orchestration side. docs/architecture.md
describes them; these tests keep that page true."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sweepctl"

# library -> the only place (a module, or a package ending in /) allowed to import it
OWNERS = {
    "paramiko": "transport/",
    "libtmux": "pod/tmux.py",
    "huggingface_hub": "pod/data.py",
    "tiktoken": "pod/tokenizer.py",
    "ray": "backends/ray_backend.py",
    "matplotlib": "views/plots.py",
    "pydantic_settings": "settings.py",
    "typer": "cli/",
}


def imports() -> list[tuple[str, int, str]]:
    """(module path relative to src/sweepctl, line, imported name) for every absolute import,
    including the lazy ones inside functions."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(rel, node.lineno, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((rel, node.lineno, node.module))
    return found


def test_the_source_is_found():
    names = {name for _, _, name in imports()}
    assert {"paramiko", "libtmux", "typer", "torch"} <= {n.split(".")[0] for n in names}


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_outside_library_is_imported_in_one_place(library):
    owner = OWNERS[library]
    strays = [f"{rel}:{line}" for rel, line, name in imports()
              if name.split(".")[0] == library and not (rel.startswith(owner) if owner.endswith("/") else rel == owner)]
    assert not strays, f"{library} belongs in {owner}, also imported at {strays}"


def test_the_trainer_imports_nothing_from_the_orchestration_side():
    strays = [f"{rel}:{line} {name}" for rel, line, name in imports()
              if rel.startswith("train/") and name.split(".")[0] == "sweepctl" and not name.startswith("sweepctl.train")]
    assert not strays


def test_only_the_entry_point_imports_the_command_line():
    """The library under cli/ is usable without it: cli/ calls down, nothing calls up."""
    strays = [f"{rel}:{line} {name}" for rel, line, name in imports()
              if name.startswith("sweepctl.cli") and not rel.startswith("cli/") and rel != "__main__.py"]
    assert not strays


def test_the_run_contract_is_standard_library_only():
    """Orchestration imports sweepctl.train.contract: it may import nothing else, not even the
    rest of the trainer, so that reading a run directory never needs torch."""
    strays = [f"contract.py:{line} {name}" for rel, line, name in imports()
              if rel == "train/contract.py" and name.split(".")[0] not in sys.stdlib_module_names]
    assert not strays


def test_importing_the_contract_does_not_import_torch():
    code = ("import sys, sweepctl.state.runs, sweepctl.train.contract; "
            "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout == "[]\n"


# A name on disk or in tmux is spelled once, by the module that owns it.
SPELLED_BY = {
    **{name: "train/contract.py" for name in ("stdout.log", "command.sh", "run_metadata.json", "config_effective.json",
                                              "dataset_manifest.json", "metrics.jsonl", "heartbeat.json", "ckpt.pt",
                                              "summary.json", "runner.json", ".sweepctl.lock", "cancel.json")},
    **{name: "state/manifest.py" for name in (".sweeps", "plan.json", "launch.json", "launches.jsonl", "hosts.json",
                                          ".plan.lock")},
}
SESSION_PREFIXES = ("sweep-", "rerun-")  # pod/tmux.py: shard_session, rerun_session
NOT_A_SESSION = {("backends/ray_backend.py", "rerun-")}  # the launch id of a Ray rerun, kept in its driver's state


def string_constants() -> list[tuple[str, int, str]]:
    """(module, line, text) of every string literal in the source, f-string parts included, and
    docstrings left out (they may name files for the reader)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        found += [(rel, node.lineno, node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]
    return found


def test_file_and_session_names_are_spelled_in_one_place():
    strays = [f"{rel}:{line} {text!r}" for rel, line, text in string_constants()
              if (text in SPELLED_BY and rel != SPELLED_BY[text])
              or (text.startswith(SESSION_PREFIXES) and rel != "pod/tmux.py" and (rel, text) not in NOT_A_SESSION)]
    assert not strays


def module_graph() -> dict[str, set[str]]:
    """sweepctl module -> the sweepctl modules it imports, lazy and TYPE_CHECKING imports included
    (a circle through a lazy import is still a circle for whoever reads or splits the code)."""
    modules = {".".join(("sweepctl", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from sweepctl.cli import remote_cmds` imports the module remote_cmds
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            graph[module] |= {t for t in targets if t in modules and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_the_package():
    graph = module_graph()
    assert {"sweepctl.cli.remote_cmds", "sweepctl.transport.sync", "sweepctl.train.contract"} <= set(graph)
    assert cycles(graph) == []


def test_no_private_name_is_imported_from_another_module():
    """A leading underscore means "this module's own": a name another module needs loses it."""
    strays = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sweepctl"):
                strays += [f"{path.relative_to(SRC)}:{node.lineno} {a.name}" for a in node.names
                           if a.name.startswith("_") and not a.name.startswith("__")]
    assert not strays


@pytest.mark.parametrize("reader", ["views/status.py", "control.py", "views/report.py", "runner.py", "state/manifest.py",
                                    "state/runtable.py"])
def test_what_reads_a_launched_sweep_does_not_import_launch(reader):
    """The manifest and the run table have homes of their own: reading a sweep back, or deciding a
    row, never needs the module that launches one."""
    strays = [f"{rel}:{line} {name}" for rel, line, name in imports()
              if rel == reader and name in ("sweepctl.launch", "sweepctl.cli")]
    strays += [f"{reader}: from sweepctl import launch" for path in [SRC / reader]
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, ast.ImportFrom) and node.module == "sweepctl"
               and any(a.name == "launch" for a in node.names)]
    assert not strays


# The stages, in the order data flows (docs/architecture.md draws them): each may import the
# stages named here, the foundations and the trainer, and nothing else. cli/ may import anything;
# nothing imports cli/ (test_only_the_entry_point_imports_the_command_line).
FOUNDATIONS = {"sweepctl", "errors", "settings", "console", "transport", "remote", "train"}
STAGES = {
    "sweep": set(),  # CSV -> specs -> plan, placement over pods: pure
    "state": {"sweep"},  # what is on disk (run directories, the manifest) and the run table
    "pod": set(),  # the machine: tmux, GPUs, its Python, data, bootstrap
    "views": {"sweep", "state", "pod"},  # status, report, plots, ETA: read-only
    "notify": {"state"},
    "runner": {"sweep", "state", "pod", "views", "notify"},
    "launch": {"sweep", "state", "pod", "views", "runner"},
    "backends": {"sweep", "state", "pod", "views", "runner", "launch"},
    "control": {"sweep", "state", "pod", "views", "backends"},
    "demo": {"sweep", "state", "pod"},
}


def stage(module: str) -> str:
    """sweepctl.state.runs -> state; sweepctl.launch -> launch; sweepctl -> sweepctl."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_every_module_belongs_to_a_stage():
    strays = sorted({stage(m) for m in module_graph()} - set(STAGES) - FOUNDATIONS - {"cli", "__main__"})
    assert not strays, f"add {strays} to STAGES or FOUNDATIONS here and to docs/architecture.md"


def test_each_stage_imports_only_the_stages_before_it():
    strays = []
    for module, targets in module_graph().items():
        own = stage(module)
        if own in STAGES:
            allowed = STAGES[own] | FOUNDATIONS | {own}
        elif own in FOUNDATIONS - {"sweepctl"}:
            allowed = FOUNDATIONS
        else:
            continue  # cli/, __main__ and the package's own __init__
        strays += [f"{module} -> {t}" for t in sorted(targets) if stage(t) not in allowed]
    assert not strays
def command_modules() -> set[str]:
    """cli modules that add commands to the app: they define `register(app)`."""
    return {f"sweepctl.cli.{p.stem}" for p in (SRC / "cli").glob("*.py")
            if any(isinstance(n, ast.FunctionDef) and n.name == "register"
                   for n in ast.parse(p.read_text(encoding="utf-8")).body)}


def test_command_modules_do_not_import_each_other():
    """Each command module parses its options and calls the library, `cli/render` and the `--host`
    helpers (remote_opts, on_pods, remote_launch); only the app imports command modules."""
    commands = command_modules()
    assert {"sweepctl.cli.run_cmds", "sweepctl.cli.report_cmds", "sweepctl.cli.remote_cmds"} <= commands
    graph = module_graph()
    strays = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                    if t in commands and m != "sweepctl.cli.app")
    assert strays == []


def test_what_the_command_line_prints_is_drawn_in_cli_render():
    """Tables, live views and progress bars are drawn in cli/render/, from plain data: no command
    module imports the rendering library, and no renderer imports a command."""
    commands = {m.removeprefix("sweepctl.").replace(".", "/") + ".py" for m in command_modules()}
    strays = [f"{rel}:{line} {name}" for rel, line, name in imports()
              if rel in commands and name.split(".")[0] == "rich"]
    assert strays == []
    graph = module_graph()
    upward = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("sweepctl.cli.render")
                    for t in targets if t in command_modules())
    assert upward == []
