# Paper tables and figures, built only from saved metric, benchmark and log files.


rule table2:
    input:
        **{net: f"{RESULTS}/evaluate/{run}/val.json" for net, run in TABLE2_RUNS.items()},
    output:
        multiext(f"{RESULTS}/tables/table2", ".csv", ".tex", ".md"),
    params:
        runs=lambda wc, input: " ".join(f"--run {net}={path}" for net, path in input.items()),
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table2.log",
    shell:
        "segbench table2 {params.runs} --out-prefix {params.prefix} --note '{params.note}' > {log} 2>&1"


rule table1:
    input:
        metrics=[f"{RESULTS}/evaluate/{table1_run(b)}/val.json" for b in config["table1"]["backbones"]],
        benchmarks=[f"{RESULTS}/benchmark/{TABLE1_MODEL[b]}.json" for b in config["table1"]["backbones"]],
    output:
        multiext(f"{RESULTS}/tables/table1", ".csv", ".tex", ".md"),
    params:
        runs=table1_flags,
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
    resources:
        **resources_for("table1"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table1.log",
    shell:
        "segbench table1 {params.runs} --out-prefix {params.prefix} --note '{params.note}' > {log} 2>&1"


rule fig5:
    input:
        [f"{RESULTS}/train/fig5-p{p}/log.csv" for p in config["fig5"]["p"]],
    output:
        multiext(f"{RESULTS}/tables/fig5", ".csv", ".tex", ".md"),
        multiext(f"{RESULTS}/figures/fig5", ".png", ".pdf"),
    params:
        runs=lambda wc, input: " ".join(f"--run {p}={path}" for p, path in zip(config["fig5"]["p"], input)),
        model=config["fig5"]["model"],
        table=lambda wc, output: output[0][: -len(".csv")],
        figure=lambda wc, output: output[3][: -len(".png")],
    resources:
        **resources_for("fig5"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/fig5.log",
    shell:
        "segbench fig5 {params.runs} --model {params.model} --out-table {params.table}"
        " --out-figure {params.figure} > {log} 2>&1"
