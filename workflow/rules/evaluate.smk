# Evaluation: every trained run and seed on its dataset's evaluation split (VOC: seg11valid).


rule evaluate:
    input:
        store=lambda wc: PATHS.stores(RUNS[wc.run])[1],
        weights=f"{RESULTS}/train/{{run}}/seed{{seed}}/model.pt",
    output:
        metrics=f"{RESULTS}/evaluate/{{run}}/seed{{seed}}/val.json",
        provenance=sidecars(f"{RESULTS}/evaluate/{{run}}/seed{{seed}}/val.json"),
    params:
        device=config["device"],
        options=lambda wc: model_options_flag(wc, "evaluate"),
        provenance=PROVENANCE,
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/evaluate/{{run}}/seed{{seed}}.log",
    shell:
        "segbench evaluate --store {input.store:q} --weights {input.weights:q} --out {output.metrics:q}"
        " --device {params.device} --threads {threads} {params.options} {params.provenance} > {log:q} 2>&1"


# The same evaluation with DeepLab's dense CRF after the net (config crf): val_crf.json beside val.json.
rule evaluate_crf:
    input:
        store=lambda wc: PATHS.stores(RUNS[wc.run])[1],
        weights=f"{RESULTS}/train/{{run}}/seed{{seed}}/model.pt",
    output:
        metrics=f"{RESULTS}/evaluate/{{run}}/seed{{seed}}/val_crf.json",
        provenance=sidecars(f"{RESULTS}/evaluate/{{run}}/seed{{seed}}/val_crf.json"),
    params:
        device=config["device"],
        options=lambda wc: model_options_flag(wc, "evaluate"),
        crf=" ".join([arg("--crf-params", json.dumps(config["crf"]["params"])),
                      f"--crf-iterations {config['crf']['iterations']} --crf-scale {config['crf']['scale']}"]),
        provenance=PROVENANCE,
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/evaluate/{{run}}/seed{{seed}}-crf.log",
    shell:
        "segbench evaluate --store {input.store:q} --weights {input.weights:q} --out {output.metrics:q} --crf"
        " {params.crf} --device {params.device} --threads {threads} {params.options} {params.provenance}"
        " > {log:q} 2>&1"
