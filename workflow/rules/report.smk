# Paper tables and figures, built only from saved metric, benchmark and log files.


rule table2:
    input:
        **{net: seeds_of(run, PATHS.metrics) for net, run in TABLE2_ROWS.items()},
    output:
        multiext(f"{RESULTS}/tables/table2", ".csv", ".tex", ".md", ".provenance.json"),
    params:
        runs=lambda wc, input: " ".join(arg("--run", f"{net}={','.join(paths)}") for net, paths in input.items()),
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
        provenance=PROVENANCE,
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table2.log",
    shell:
        "segbench table2 {params.runs} --out-prefix {params.prefix:q} --note {params.note:q} {params.provenance}"
        " > {log:q} 2>&1"


rule table1:
    input:
        metrics=[p for b in config["table1"]["backbones"] for p in seeds_of(runs.table1_run(b), PATHS.metrics)],
        benchmarks=[f"{RESULTS}/benchmark/{RUNS[runs.table1_run(b)].model}.json" for b in config["table1"]["backbones"]],
    output:
        multiext(f"{RESULTS}/tables/table1", ".csv", ".tex", ".md", ".provenance.json"),
    params:
        runs=table1_flags,
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
        provenance=PROVENANCE,
    resources:
        **resources_for("table1"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table1.log",
    shell:
        "segbench table1 {params.runs} --out-prefix {params.prefix:q} --note {params.note:q} {params.provenance}"
        " > {log:q} 2>&1"


FIG5_FIRST = runs.fig5_run(config["fig5"]["p"][0])  # its first seed's run.json holds the loss floor


rule fig5:
    input:
        logs=[p for f in config["fig5"]["p"] for p in seeds_of(runs.fig5_run(f), PATHS.log)],
        floor=f"{PATHS.run_dir(FIG5_FIRST, run_seeds(FIG5_FIRST)[0])}/run.json",
    output:
        multiext(f"{RESULTS}/tables/fig5", ".csv", ".tex", ".md"),
        report(f"{RESULTS}/figures/fig5.png", caption="../report/fig5.rst", category="Figure 5", subcategory="Figure",
               labels={"figure": "fig5"}),
        f"{RESULTS}/figures/fig5.pdf",
        sidecars(f"{RESULTS}/tables/fig5", *figure_files(f"{RESULTS}/figures/fig5")),
    params:
        runs=" ".join(arg("--run", f"{p}={','.join(seeds_of(runs.fig5_run(p), PATHS.log))}") for p in config["fig5"]["p"]),
        model=config["fig5"]["model"],
        table=lambda wc, output: output[0][: -len(".csv")],
        figure=lambda wc, output: output[3][: -len(".png")],
        provenance=PROVENANCE,
    resources:
        **resources_for("fig5"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/fig5.log",
    shell:
        "segbench fig5 {params.runs} --floor-from {input.floor:q} --model {params.model} --out-table {params.table:q}"
        " --out-figure {params.figure:q} {params.provenance} > {log:q} 2>&1"


rule table_pretrain:
    input:
        [f"{RESULTS}/pretrain/{b}.json" for b in BACKBONES] if not TORCHVISION else [],
    output:
        multiext(f"{RESULTS}/tables/pretrain", ".csv", ".tex", ".md", ".provenance.json"),
    params:
        runs=lambda wc, input: " ".join(arg("--run", f"{b}={path}") for b, path in zip(BACKBONES, input)),
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
        provenance=PROVENANCE,
    resources:
        **resources_for("table1"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table_pretrain.log",
    shell:
        "segbench table-pretrain {params.runs} --out-prefix {params.prefix:q} --note {params.note:q}"
        " {params.provenance} > {log:q} 2>&1"


for _table, _rows in (("table4", runs.TABLE4_ROWS), ("table5", runs.TABLE5_ROWS)):

    rule:
        name:
            _table
        input:
            **{row: seeds_of(run, PATHS.metrics) for row, run in _rows.items()},
        output:
            multiext(f"{RESULTS}/tables/{_table}", ".csv", ".tex", ".md", ".provenance.json"),
        params:
            runs=lambda wc, input: " ".join(arg("--run", f"{row}={','.join(paths)}") for row, paths in input.items()),
            note=DATASET_NOTES[_table],
            prefix=lambda wc, output: output[0][: -len(".csv")],
            table=_table,
            provenance=PROVENANCE,
        resources:
            **resources_for("table2"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/report/{_table}.log",
        shell:
            "segbench {params.table} {params.runs} --out-prefix {params.prefix:q} --note {params.note:q}"
            " {params.provenance} > {log:q} 2>&1"


if SUCCESSOR_RUNS:

    rule table_successors:
        input:
            metrics=[path for run in SUCCESSOR_ROWS for path in seeds_of(run, PATHS.metrics)],
            benchmarks=[successor_benchmark(run) for run in SUCCESSOR_ROWS],
            crf_metrics=[path for run in SUCCESSOR_ROWS if run in CRF_RUNS for path in seeds_of(run, crf_metrics)],
        output:
            multiext(f"{RESULTS}/tables/successors", ".csv", ".tex", ".md", ".provenance.json"),
        params:
            runs=successors_flags,
            note=DATASET_NOTES["successors"],
            prefix=lambda wc, output: output[0][: -len(".csv")],
            provenance=PROVENANCE,
        resources:
            **resources_for("table2"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/report/table_successors.log",
        shell:
            "segbench table-successors {params.runs} --out-prefix {params.prefix:q} --note {params.note:q}"
            " {params.provenance} > {log:q} 2>&1"
