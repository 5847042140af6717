# Evaluation: every trained run on the validation split (seg11valid).


rule evaluate:
    input:
        store=f"{RESULTS}/preprocessed/voc/val.h5",
        weights=f"{RESULTS}/train/{{run}}/model.pt",
    output:
        f"{RESULTS}/evaluate/{{run}}/val.json",
    params:
        device=config["device"],
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/evaluate/{{run}}.log",
    shell:
        "segbench evaluate --store {input.store} --weights {input.weights} --out {output}"
        " --device {params.device} --threads {threads} > {log} 2>&1"
