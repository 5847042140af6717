"""HTML pages for the Snakemake report: each table with its caption and the runs behind every row, and one
page that follows the provenance sidecars from the tables and figures back to the stores and weights.

Snakemake's report shows images, PDFs and HTML but only offers CSV and JSON for download, so the tables
(``tables.write_table``'s Markdown) and their sidecars (``provenance.write_table_provenance``) are rendered
here. Pages are self-contained (inline style, no scripts) and read only the files they are given.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Mapping, Sequence

from segbench.infra.atomic import write_text
from segbench.infra.provenance import SUFFIX, provenance_path

STYLE = """
body { font-family: sans-serif; font-size: 14px; margin: 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.l { text-align: left; }
code, pre { font-size: 12px; }
p.caption { max-width: 60em; }
"""


def read_markdown_table(md: str | os.PathLike) -> tuple[str, list[str], list[list[str]]]:
    """``(caption, headers, rows)`` of a table written by ``tables.write_table`` (caption, blank line, pipe
    table)."""
    path = Path(md)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run the step that writes the table")
    lines = path.read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    caption = " ".join(line for line in lines if line.strip() and not line.startswith("|"))
    if len(table) < 2:
        raise ValueError(f"{path} has no Markdown pipe table (a header line and a --- line)")

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    return caption, cells(table[0]), [cells(line) for line in table[2:]]


def _page(title: str, body: Sequence[str]) -> str:
    return "\n".join(["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title>",
                      f"<style>{STYLE}</style></head><body>", f"<h2>{html.escape(title)}</h2>", *body,
                      "</body></html>", ""])


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], left: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        body.append("<tr>" + "".join(f"<td{' class=l' if k in left else ''}>{html.escape(_text(v))}</td>"
                                     for k, v in enumerate(row)) + "</tr>")
    return f"<table><tr>{head}</tr>" + "".join(body) + "</table>"


def _text(value) -> str:
    if value is None:
        return "--"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _short(text, n: int) -> str:
    return "--" if text is None else str(text)[:n]


def _details(summary: str, record: Mapping) -> str:
    return (f"<details><summary>{html.escape(summary)}</summary><pre>"
            f"{html.escape(json.dumps(record, indent=1, sort_keys=True))}</pre></details>")


def _row_files(rows: Mapping) -> list[list]:
    """One line per file of a table sidecar's rows: row, role, file, sha256, the summary of its run, and the
    files that run read (from the file's own sidecar: for an evaluation, the store and the trained weights)."""
    lines = []
    for label, roles in rows.items():
        for role, entries in roles.items():
            for entry in entries if isinstance(entries, list) else [entries]:
                run = entry.get("run") or {}
                side = Path(entry["provenance"]) if entry.get("provenance") else None
                sources = ([i["path"] for i in json.loads(side.read_text()).get("inputs", [])]
                           if side is not None and side.is_file() else [])
                lines.append([label, role, entry["path"], _short(entry["sha256"], 12), run.get("seeds"),
                              run.get("device"), run.get("precision"), run.get("wall_s"),
                              _short(run.get("git_commit"), 10), run.get("git_dirty"),
                              _short(run.get("config_sha256"), 12), "; ".join(sources) or "--"])
    return lines


def table_page(*, md: str | os.PathLike, out_html: str | os.PathLike, title: str,
               sidecar: str | os.PathLike | None = None) -> Path:
    """Write ``out_html``: the table of ``md`` with its caption and, from its provenance ``sidecar`` (default:
    the table's own, ``<prefix>.provenance.json``), the files and runs behind every row."""
    caption, headers, rows = read_markdown_table(md)
    body = [f"<p class=caption>{html.escape(caption)}</p>", _table(headers, rows)]
    sidecar = Path(sidecar) if sidecar is not None else provenance_path(Path(md).with_suffix(""))
    if sidecar.is_file():
        record = json.loads(sidecar.read_text())
        body += ["<h3>Provenance</h3>",
                 f"<p>Commits: {html.escape(_text(record.get('git_commits')) or '--')}; configuration sha256: "
                 f"{html.escape(_text(record.get('config_sha256s')) or '--')}; table sidecar "
                 f"<code>{html.escape(str(sidecar))}</code>. Each row was read from these files (the run columns "
                 "come from each file's own sidecar):</p>",
                 _table(["row", "role", "file", "sha256", "seeds", "device", "precision", "wall s", "commit",
                         "dirty", "config", "made from"], _row_files(record.get("rows", {})), left=(1, 2, 11)),
                 _details("the whole sidecar", record)]
        if record.get("files_without_provenance"):
            body.append(f"<p>Files without a sidecar: {html.escape(_text(record['files_without_provenance']))}</p>")
    else:
        body.append(f"<p>No provenance sidecar ({html.escape(str(sidecar))}) was written for this table.</p>")
    return write_text(out_html, _page(title, body))


def _linked(record: Mapping) -> list[str]:
    """The sidecars a record points to: its inputs' (a job) or its rows' files' (a table)."""
    if record.get("kind") == "table":
        entries = [e for roles in record.get("rows", {}).values() for v in roles.values()
                   for e in (v if isinstance(v, list) else [v])]
    else:
        entries = record.get("inputs", [])
    return [e["provenance"] for e in entries if e.get("provenance")]


def trace(sidecars: Sequence[str | os.PathLike]) -> tuple[dict[str, dict], list[str]]:
    """Every sidecar reachable from ``sidecars`` (theirs, their inputs', and so on) as path -> record, in the
    order first reached (breadth first), and the paths among ``sidecars`` that do not exist."""
    found, missing, queue = {}, [], [str(s) for s in sidecars]
    while queue:
        path = queue.pop(0)
        if path in found or path in missing:
            continue
        if not Path(path).is_file():
            missing.append(path)
            continue
        found[path] = json.loads(Path(path).read_text())
        queue += [p for p in _linked(found[path]) if p not in found]
    return found, missing


def provenance_page(*, sidecars: Sequence[str | os.PathLike], out_html: str | os.PathLike,
                    title: str = "Provenance") -> Path:
    """Write ``out_html``: one line per sidecar reachable from ``sidecars`` (:func:`trace`), with what was
    recorded about its job (commit, config hash, device, threads, batch, seeds, precision, wall time and
    the inputs with their sha256), and the resolved configuration the jobs ran under."""
    records, missing = trace(sidecars)
    lines, configs = [], {}
    for path, record in records.items():
        job = record.get("table_job", record) if record.get("kind") == "table" else record
        configs.setdefault(job.get("config_sha256"), job.get("config"))
        inputs = "; ".join(f"{e['path']} ({_short(e['sha256'], 12)})" for e in record.get("inputs", []))
        device = job.get("device", {})
        lines.append([path[:-len(SUFFIX)] if path.endswith(SUFFIX) else path, record.get("kind", "job"),
                      _short(job.get("git", {}).get("commit"), 10), job.get("git", {}).get("dirty"),
                      _short(job.get("config_sha256"), 12), f"{device.get('name', '?')} x{device.get('count', '?')}",
                      job.get("software", {}).get("torch"), job.get("threads"), job.get("batch_size"),
                      job.get("seeds"), job.get("precision"), job.get("wall_s"), inputs or "--"])
    body = [f"<p class=caption>{len(records)} outputs, traced from the report's tables and figures back to the "
            "dataset stores and starting weights through their sidecars (<code>&lt;output&gt;.provenance.json"
            "</code>). A table's inputs are listed on its own page.</p>",
            _table(["output", "kind", "commit", "dirty", "config", "device", "torch", "threads", "batch", "seeds",
                    "precision", "wall s", "inputs (sha256)"], lines, left=(1, 12))]
    if missing:
        body.append(f"<p>Outputs without a sidecar: {html.escape(', '.join(missing))}</p>")
    for digest, config in configs.items():
        body.append(_details(f"resolved configuration {_short(digest, 12)}", config or {}))
    return write_text(out_html, _page(title, body))


def report_pages(*, tables: Mapping[str, str | os.PathLike], titles: Mapping[str, str] | None = None,
                 figures: Sequence[str | os.PathLike] = (), out_dir: str | os.PathLike) -> list[Path]:
    """The report's pages in one process: ``out_dir/<name>.html`` for each ``name -> table prefix`` of
    ``tables`` (:func:`table_page`, titled by ``titles``), and ``out_dir/provenance.html``
    (:func:`provenance_page`) traced from the tables' and ``figures``' sidecars. Returns the paths."""
    titles = dict(titles or {})
    out_dir = Path(out_dir)
    written = [table_page(md=f"{prefix}.md", out_html=out_dir / f"{name}.html", title=titles.get(name, name))
               for name, prefix in tables.items()]
    roots = [provenance_path(prefix) for prefix in tables.values()] + [provenance_path(f) for f in figures]
    written.append(provenance_page(sidecars=roots, out_html=out_dir / "provenance.html"))
    return written
