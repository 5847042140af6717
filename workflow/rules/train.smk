# Training: the classifier stand-in for ImageNet weights, then every run of the run table, once per seed.

if ZOO:

    rule zoo_standin:
        """A backbone's stand-in from the model zoo (zoo/, trained once: segbench zoo-train), checked against
        the zoo's manifest."""
        input:
            weights=lambda wc: f"{config['pretrain']['zoo']}/{wc.backbone}.pt",
            manifest=f"{config['pretrain']['zoo']}/MANIFEST.json",
        output:
            weights=f"{RESULTS}/pretrain/{{backbone}}.pt",
            summary=f"{RESULTS}/pretrain/{{backbone}}.json",
            provenance=sidecars(f"{RESULTS}/pretrain/{{backbone}}.pt", f"{RESULTS}/pretrain/{{backbone}}.json"),
        wildcard_constraints:
            backbone="|".join(ZOO_HELD) or "$^",
        params:
            zoo=lambda wc, input: os.path.dirname(input.manifest),
            width=lambda wc: backbone_width(wc.backbone),
            provenance=PROVENANCE,
        resources:
            **resources_for("zoo_standin"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench zoo-standin {wildcards.backbone} --out {output.weights:q} --zoo {params.zoo:q}"
            " --width {params.width} {params.provenance} > {log:q} 2>&1"


if not TORCHVISION:  # the stand-ins the zoo does not hold (source zoo), or all of them (source synthetic)

    rule standin_images:
        """The pretrain step's images for the stand-ins of one input size, rendered once (deleted after use)."""
        output:
            temp(f"{RESULTS}/pretrain/images-{{size}}px.h5"),
        wildcard_constraints:
            size=r"\d+",
        params:
            c=config["pretrain"],
        threads: 1
        priority: 45  # ahead of the stand-ins that wait for it
        resources:
            **resources_for("standin_images"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/images-{{size}}px.log",
        shell:
            "segbench standin-images --out {output:q} --size {wildcards.size} --crop-size {params.c[crop_size]}"
            " --crop-iterations {params.c[crop_iterations]} --iterations {params.c[iterations]}"
            " --batch-size {params.c[batch_size]} --clutter {params.c[clutter]} --seed {params.c[seed]} > {log:q} 2>&1"

    rule pretrain:
        input:
            images=shared_standin_images,
        output:
            weights=f"{RESULTS}/pretrain/{{backbone}}.pt",
            summary=f"{RESULTS}/pretrain/{{backbone}}.json",
            provenance=sidecars(f"{RESULTS}/pretrain/{{backbone}}.pt", f"{RESULTS}/pretrain/{{backbone}}.json"),
        wildcard_constraints:
            backbone=TRAINED_BACKBONES,
        params:
            c=config["pretrain"],
            width=lambda wc: backbone_width(wc.backbone),
            dropout=opt("--dropout", config["models"]["dropout"]),
            # fp16's loss scaling lives in the training loop only: the stand-in classifier resolves auto instead
            precision="auto" if config["precision"] == "fp16" else config["precision"],
            images=lambda wc: opt("--images", next(iter(shared_standin_images(wc)), None)),
            device=config["device"],
            provenance=PROVENANCE,
        threads: 1
        priority: 40  # the longest one-core jobs, at the head of every training chain: started early
        resources:
            **resources_for("pretrain"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench pretrain --out {output.weights:q} --backbone {wildcards.backbone} --width {params.width}"
            " --crop-size {params.c[crop_size]} --crop-iterations {params.c[crop_iterations]}"
            " --iterations {params.c[iterations]} --batch-size {params.c[batch_size]} --lr {params.c[lr]}"
            " --clutter {params.c[clutter]} {params.dropout} --precision {params.precision} --seed {params.c[seed]}"
            " {params.images} --device {params.device} --threads {threads} {params.provenance} > {log:q} 2>&1"

else:

    rule fetch_weights:
        input:
            CHECKSUM_TABLE,
        output:
            f"{RESULTS}/pretrain/{{backbone}}.pt",
        wildcard_constraints:
            backbone=TRAINED_BACKBONES,
        params:
            cache=config["pretrain"]["cache"],
            source=lambda wc: runs.weight_source(config, wc.backbone),
            checksums=opt("--checksums", CHECKSUMS),
        resources:
            **resources_for("download"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench fetch-weights {wildcards.backbone} --source {params.source} --out {output:q}"
            " --cache {params.cache:q} {params.checksums} > {log:q} 2>&1"


if not set(models.PRUNED_FROM) <= set(ZOO_HELD):  # a zoo-held pruned trunk is also fine-tuned

    rule prune_trunk:
        """ICNet's half-width ResNet-50, pruned from the ResNet-50 classifier (stand-in or ImageNet weights)."""
        input:
            lambda wc: f"{RESULTS}/pretrain/{models.PRUNED_FROM[wc.backbone]}.pt",
        output:
            weights=f"{RESULTS}/pretrain/{{backbone}}.pt",
            summary=[] if TORCHVISION else [f"{RESULTS}/pretrain/{{backbone}}.json"],
            provenance=sidecars(f"{RESULTS}/pretrain/{{backbone}}.pt",
                                *([] if TORCHVISION else [f"{RESULTS}/pretrain/{{backbone}}.json"])),
        wildcard_constraints:
            backbone="|".join(models.PRUNED_FROM),
        params:
            summary="" if TORCHVISION else "--with-summary",
            provenance=PROVENANCE,
        threads: 1
        resources:
            **resources_for("prune_trunk"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/pretrain/{{backbone}}.log",
        shell:
            "segbench prune-trunk {input:q} --out {output.weights:q} --backbone {wildcards.backbone} {params.summary}"
            " --device cpu --threads {threads} {params.provenance} > {log:q} 2>&1"


rule train:
    input:
        store=lambda wc: PATHS.stores(RUNS[wc.run])[0],
        val=lambda wc: PATHS.stores(RUNS[wc.run])[1],
        init=lambda wc: PATHS.init(RUNS[wc.run], wc.seed),
    output:
        model=f"{RESULTS}/train/{{run}}/seed{{seed}}/model.pt",
        log=f"{RESULTS}/train/{{run}}/seed{{seed}}/log.csv",
        summary=f"{RESULTS}/train/{{run}}/seed{{seed}}/run.json",
        provenance=sidecars(*multiext(f"{RESULTS}/train/{{run}}/seed{{seed}}/", "model.pt", "log.csv", "run.json")),
    params:
        # `segbench train`, or torchrun starting train.processes of it (docs/cluster.md)
        launch=lambda wc: launch_command(train_processes(wc)),
        flags=train_flags,
        provenance=PROVENANCE,
        out_dir=lambda wc, output: os.path.dirname(output.model),
    threads: 1  # per training process; its data-loading workers and further processes are in cpus_per_task
    priority: lambda wc: TRAIN_PRIORITY[wc.run]  # by the training left on its chain (segbench.runs.train_priorities)
    resources:
        **train_resources(),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/train/{{run}}/seed{{seed}}.log",
    shell:
        "{params.launch} --train-store {input.store:q} --out-dir {params.out_dir:q} {params.flags}"
        " --threads {threads} {params.provenance} > {log:q} 2>&1"
