# Training: the classifier stand-in for ImageNet weights, then every FCN run of the run table.


if config["pretrain"]["source"] == "synthetic":

    rule pretrain:
        output:
            f"{RESULTS}/pretrain/{{backbone}}.pt",
        params:
            c=config["pretrain"],
            width=lambda wc: config["models"]["width"][CONFIG_BACKBONE[wc.backbone]],
            seed=config["seed"],
            device=config["device"],
        threads: 1
        resources:
            **resources_for("pretrain"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench pretrain --out {output} --backbone {wildcards.backbone} --width {params.width}"
            " --image-size {params.c[image_size]} --iterations {params.c[iterations]} --batch-size {params.c[batch_size]}"
            " --lr {params.c[lr]} --seed {params.seed} --device {params.device} --threads {threads} > {log} 2>&1"

else:

    rule fetch_weights:
        output:
            f"{RESULTS}/pretrain/{{backbone}}.pt",
        params:
            cache=config["pretrain"]["cache"],
        resources:
            **resources_for("download"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench fetch-weights {wildcards.backbone} --out {output} --cache {params.cache} > {log} 2>&1"


rule train:
    input:
        store=f"{RESULTS}/preprocessed/voc/train.h5",
        val=f"{RESULTS}/preprocessed/voc/val.h5",
        init=lambda wc: RUNS[wc.run]["init"],
    output:
        model=f"{RESULTS}/train/{{run}}/model.pt",
        log=f"{RESULTS}/train/{{run}}/log.csv",
    params:
        flags=train_flags,
        out_dir=lambda wc, output: os.path.dirname(output.model),
    threads: 1
    resources:
        **resources_for("train"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/train/{{run}}.log",
    shell:
        "segbench train --train-store {input.store} --out-dir {params.out_dir} {params.flags}"
        " --threads {threads} > {log} 2>&1"
