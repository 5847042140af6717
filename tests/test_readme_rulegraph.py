"""README.md's rule graph is the workflow's: `snakemake --rulegraph mermaid-js` on the embedded default config.

Snakemake prints the edges into each node in set order, which changes from run to run with Python's string hashing
(PYTHONHASHSEED); node ids, labels and colours do not. Both sides are therefore compared with their edge lines
sorted by (target, source) id, which is also how the README stores them. `python tests/test_readme_rulegraph.py`
rewrites the README's block from the workflow.
"""

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

README = ROOT / "README.md"
COMMAND = "snakemake --rulegraph mermaid-js"
# The block right after the sentence that names the command.
BLOCK = re.compile(r"(The rule graph [^`]*`snakemake --rulegraph mermaid-js`.*?\n\n```mermaid\n)(.*?)(\n```)", re.S)
EDGE = re.compile(r"^\s*id(\d+) --> id(\d+)$")
REGENERATE = (f"regenerate it with `python tests/test_readme_rulegraph.py` (it runs `{COMMAND}` in the repository "
              f"root, with no --configfile: the Snakefile's embedded config/config.yaml, and writes the output with "
              f"its edge lines sorted), or paste the output of `{COMMAND}` into the ```mermaid block under "
              f"'The rule graph' in README.md")


def normalise(graph: str) -> str:
    """The graph with its edge lines sorted by (target id, source id); every other line as it is, in order."""
    lines = graph.strip("\n").splitlines()
    edges = [line for line in lines if EDGE.match(line)]
    rest = [line for line in lines if not EDGE.match(line)]
    edges.sort(key=lambda line: tuple(int(n) for n in reversed(EDGE.match(line).groups())))
    return "\n".join(rest + edges)


def workflow_rulegraph() -> str:
    """The stdout of `snakemake --rulegraph mermaid-js` in the repository root (--nolock: no lock taken on results/,
    whatever else runs there; the graph is the same)."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--rulegraph", "mermaid-js", "--nolock"], cwd=ROOT,
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"{COMMAND} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def readme_rulegraph(text: str) -> str:
    match = BLOCK.search(text)
    assert match, f"README.md has no ```mermaid block after 'The rule graph (`{COMMAND}`)'; {REGENERATE}"
    return match.group(2)


def test_readme_rulegraph_is_the_workflows():
    readme = normalise(readme_rulegraph(README.read_text()))
    workflow = normalise(workflow_rulegraph())
    diff = "\n".join(difflib.unified_diff(readme.splitlines(), workflow.splitlines(), "README.md", COMMAND,
                                          lineterm=""))
    assert readme == workflow, f"README.md's rule graph is not the workflow's; {REGENERATE}.\n{diff}"


def test_normalise_ignores_only_the_order_of_edges():
    graph = "flowchart TB\n\tid0[all]\n\tid1[train]\n\tid1 --> id0\n\tid10 --> id0\n\tid2 --> id1\n\tid1 --> id1\n"
    shuffled = "flowchart TB\n\tid0[all]\n\tid1[train]\n\tid1 --> id1\n\tid10 --> id0\n\tid2 --> id1\n\tid1 --> id0"
    assert normalise(graph) == normalise(shuffled)
    assert normalise(graph).splitlines()[3:] == ["\tid1 --> id0", "\tid10 --> id0", "\tid1 --> id1", "\tid2 --> id1"]
    assert normalise(graph) != normalise(graph.replace("id2 --> id1", "id2 --> id0"))
    assert normalise(graph) != normalise(graph.replace("[all]\n\tid1[train]", "[train]\n\tid1[all]"))


if __name__ == "__main__":
    text = README.read_text()
    readme_rulegraph(text)
    graph = normalise(workflow_rulegraph())
    README.write_text(BLOCK.sub(lambda m: m.group(1) + graph + m.group(3), text, count=1))
    print(f"README.md: rule graph rewritten from `{COMMAND}`")
