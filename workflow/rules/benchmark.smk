# Forward-time benchmark (Table 1): batch-1 forward passes on the CPUs it asks SLURM for (cpus_per_task), as
# many threads; locally, as many as --cores allows of them. ``modes`` may name ``auto``: the modes the machine's
# instruction set allows (no bf16 where it is emulated; int8 with VNNI or AMX and torchao), the JSON naming the
# one chosen and why.

BENCHMARK_RESOURCES = resources_for("benchmark")


rule benchmark:
    output:
        result=f"{RESULTS}/benchmark/{{model}}.json",
        provenance=sidecars(f"{RESULTS}/benchmark/{{model}}.json"),
    params:
        c=config["benchmark"],
        modes=",".join(config["benchmark"]["modes"]),
        device=config["device"],
        provenance=PROVENANCE,
    # what it asks for (one GPU: cpus_per_gpu, where a site asks that way), capped at --cores
    threads: BENCHMARK_RESOURCES.get("cpus_per_task") or BENCHMARK_RESOURCES.get("cpus_per_gpu") or 1
    # First, while every core is free: a job that needs many cores, queued among one-core jobs, waits until
    # enough are idle (at worst the end of the run), which left cores idle at the end of the embedded default.
    # Snakemake starts the jobs whose priorities sum highest, so this is above any two one-core jobs together.
    priority: runs.BENCHMARK_PRIORITY
    resources:
        **BENCHMARK_RESOURCES,
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/benchmark/{{model}}.log",
    shell:
        "segbench benchmark {wildcards.model} --out {output.result:q} --size {params.c[size]} --width {params.c[width]}"
        " --trials {params.c[trials]} --warmup {params.c[warmup]} --modes {params.modes}"
        " --device {params.device} --threads {threads} {params.provenance} > {log:q} 2>&1"
