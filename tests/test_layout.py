"""The package's layering, read from its import graph (imports inside functions included): a module imports
only from its own subpackage or from a lower layer, and `import segbench.models` loads nothing else."""

import ast
import subprocess
import sys

from conftest import ROOT

PACKAGE = ROOT / "src" / "segbench"
# Lowest first; a subpackage (or top-level module) may import those of its own layer only where named here.
LAYERS = [
    {"errors"},
    {"infra"},
    {"hha", "models"},
    {"data"},
    {"weights"},
    {"evaluation"},
    {"pretraining", "training"},
    {"reporting"},
    {"rehearsal"},  # the rehearsal's mirror writes twins of the data, the weights and the released nets
    {"runs", "cli"},
]
# data reads NYUDv2 through the HHA encoding; the stand-ins' pretraining uses training's optimizers
SAME_LAYER = {("data", "hha"), ("cli", "runs"), ("pretraining", "training")}


def _unit(module: str) -> str:
    """The layering unit of a dotted module name: its first level below segbench."""
    return module.split(".")[1] if module.count(".") >= 1 else "__init__"


def _layer(unit: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit in layer)


def import_graph() -> dict[str, set[str]]:
    """segbench module -> the segbench modules it imports anywhere in its source."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("segbench")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                if base.startswith("segbench"):
                    targets |= {f"{base}.{a.name}" if base == "segbench" else base for a in node.names}
        graph[name] = targets
    return graph


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in import_graph() if m != "segbench"}
    assert units <= set().union(*LAYERS), units - set().union(*LAYERS)


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, targets in import_graph().items():
        if module == "segbench":
            continue
        src = _unit(module)
        for target in targets:
            dst = _unit(target)
            if dst == src or dst == "__init__":
                continue
            if _layer(dst) > _layer(src) or (_layer(dst) == _layer(src) and (src, dst) not in SAME_LAYER):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_importing_the_models_loads_only_the_models_and_the_errors():
    code = "import sys, segbench.models; print(sorted(m for m in sys.modules if m.startswith('segbench')))"
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert [m for m in loaded if not (m.startswith("segbench.models") or m in ("segbench", "segbench.errors"))] == []
