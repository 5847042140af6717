"""Writing one table three ways: CSV (for machines), LaTeX with booktabs (for the paper), Markdown (for people)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from segbench.infra.atomic import write_text
from segbench.infra.identity import code_note


def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "--"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def write_table(prefix: str | os.PathLike, columns: Sequence[tuple[str, str]], rows: Sequence[dict], *,
                caption: str, digits: int = 1, csv_columns: Sequence[tuple[str, str]] | None = None,
                sources: Sequence[dict] = ()) -> list[Path]:
    """Write ``prefix.csv``, ``prefix.tex`` and ``prefix.md``.

    ``columns`` is a list of (key, header) pairs; each row maps keys to values. The CSV uses the keys of
    ``csv_columns`` (default: ``columns``) as its header and full precision (4 decimals); the LaTeX and
    Markdown use the headers of ``columns`` and ``digits``. ``sources`` are the run or evaluation records
    the rows were built from: when they come from more than one code identity, the caption says so
    (``identity.code_note``).
    """
    prefix = Path(prefix)
    note = code_note(sources)
    caption = f"{caption}; {note}" if note else caption
    csv_keys = [k for k, _ in (csv_columns or columns)]
    keys = [k for k, _ in columns]
    headers = [h for _, h in columns]
    csv_lines = [",".join(csv_keys)] + [",".join(_csv_cell(r.get(k)) for k in csv_keys) for r in rows]
    cells = [[_fmt(r.get(k), digits) for k in keys] for r in rows]
    tex = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex_escape(caption)}}}",
           "\\begin{tabular}{l" + "r" * (len(keys) - 1) + "}", "\\toprule",
           " & ".join(_tex_escape(h) for h in headers) + " \\\\", "\\midrule"]
    tex += [" & ".join(_tex_escape(c) for c in row) + " \\\\" for row in cells]
    tex += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    md = [f"{caption}", "", "| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(keys) - 1)) + "|"]
    md += ["| " + " | ".join(row) + " |" for row in cells]
    paths = [prefix.with_suffix(".csv"), prefix.with_suffix(".tex"), prefix.with_suffix(".md")]
    for path, lines in zip(paths, (csv_lines, tex, md)):
        write_text(path, "\n".join(lines) + "\n")
    return paths


def _csv_cell(value) -> str:
    text = _fmt(value, 4).replace("--", "")
    return f'"{text}"' if "," in text else text


def _tex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#")):
        text = text.replace(a, b)
    return text.replace("Δ", "$\\Delta$").replace("±", "$\\pm$")
