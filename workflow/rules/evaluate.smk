# Evaluation: every trained run and seed on its dataset's evaluation split (VOC: seg11valid).


rule evaluate:
    input:
        store=lambda wc: PATHS.stores(RUNS[wc.run])[1],
        weights=f"{RESULTS}/train/{{run}}/seed{{seed}}/model.pt",
    output:
        f"{RESULTS}/evaluate/{{run}}/seed{{seed}}/val.json",
    params:
        device=config["device"],
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/evaluate/{{run}}/seed{{seed}}.log",
    shell:
        "segbench evaluate --store {input.store} --weights {input.weights} --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"
