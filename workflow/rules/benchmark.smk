# Forward-time benchmark (Table 1): runs alone on all cores so that nothing else disturbs the timing.


rule benchmark:
    output:
        result=f"{RESULTS}/benchmark/{{model}}.json",
        provenance=sidecars(f"{RESULTS}/benchmark/{{model}}.json"),
    params:
        c=config["benchmark"],
        modes=",".join(config["benchmark"]["modes"]),
        device=config["device"],
        provenance=PROVENANCE,
    threads: 64  # all cores (capped at --cores), so that nothing runs beside the timing
    # First, while every core is free: a job that needs all cores, queued among one-core jobs, waits until
    # none runs (the end of the run), which left cores idle at the end of the embedded default. Snakemake
    # starts the jobs whose priorities sum highest, so this is above any two one-core jobs together.
    priority: 100
    resources:
        **resources_for("benchmark"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/benchmark/{{model}}.log",
    shell:
        "segbench benchmark {wildcards.model} --out {output.result:q} --size {params.c[size]} --width {params.c[width]}"
        " --trials {params.c[trials]} --warmup {params.c[warmup]} --modes {params.modes}"
        " --device {params.device} --threads {threads} {params.provenance} > {log:q} 2>&1"
