# Datasets: synthetic twins (embedded default) or downloads (real data), then the HDF5 stores.

from segbench.infra.resources import hha_processes

# Jobs that fetch from the network run on the host that runs Snakemake (the login node under --profile slurm):
# compute nodes often have no network. download here, voc_test_images and released_model in trace.smk (each
# with `localrule: True`); fetch_weights is train.smk's.
if TORCHVISION:

    localrules:
        fetch_weights,


if REHEARSAL:

    rule rehearsal_mirror:
        """Twins of every download at the real sizes, named and packed as the real files, and their checksum table
        (config/rehearsal.yaml; segbench.rehearsal)."""
        output:
            CHECKSUMS,
        params:
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            twin=lambda wc: arg("--twin", json.dumps({k: v for k, v in REHEARSAL.items() if k != "mirror"})),
            test_years=" ".join(arg("--test-year", year) for year in TEST_YEARS),
            weights=" ".join(arg("--weights", f"{b}:{runs.weight_source(config, b)}")
                             for b in BACKBONES if b not in models.PRUNED_FROM),
            released=" ".join(arg("--released", variant) for variant in RELEASED_VARIANTS),
        resources:
            **resources_for("rehearsal_mirror"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/rehearsal_mirror.log",
        shell:
            "segbench rehearsal-mirror --out-dir {params.out_dir:q} {params.twin} {params.test_years} {params.weights}"
            " {params.released} > {log:q} 2>&1"


if SYNTHETIC:

    rule synth_voc:
        output:
            raw_ready("voc"),
        params:
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            c=config["data"]["synthetic"]["voc"],
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/synth_voc.log",
        shell:
            "segbench synth-voc --out-dir {params.out_dir:q} --image-size {params.c[image_size]}"
            " --n-sbd-train {params.c[n_sbd_train]} --n-sbd-val {params.c[n_sbd_val]} --n-voc-train {params.c[n_voc_train]}"
            " --n-voc-val {params.c[n_voc_val]} --n-overlap {params.c[n_overlap]} --seed {params.c[seed]} > {log:q} 2>&1"

    rule synth_nyud:
        output:
            raw_ready("nyud"),
        params:
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            c=config["data"]["synthetic"]["nyud"],
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/synth_nyud.log",
        shell:
            "segbench synth-nyud --out-dir {params.out_dir:q} --n-images {params.c[n_images]}"
            " --frame-scale {params.c[frame_scale]} --seed {params.c[seed]} > {log:q} 2>&1"

    rule synth_siftflow:
        output:
            raw_ready("siftflow"),
        params:
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            c=config["data"]["synthetic"]["siftflow"],
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/synth_siftflow.log",
        shell:
            "segbench synth-siftflow --out-dir {params.out_dir:q} --n-train {params.c[n_train]} --n-test {params.c[n_test]}"
            " --seed {params.c[seed]} > {log:q} 2>&1"

else:

    rule download:
        input:
            CHECKSUM_TABLE,
        output:
            raw_ready("{dataset}"),
        localrule: True
        params:
            dest_dir=lambda wc, output: os.path.dirname(output[0]),
            data_root=opt("--data-root", config["data"]["data_root"]),
            checksums=opt("--checksums", CHECKSUMS),
        resources:
            **resources_for("download"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/download_{{dataset}}.log",
        shell:
            "segbench download {wildcards.dataset} --dest-dir {params.dest_dir:q} {params.data_root} {params.checksums}"
            " > {log:q} 2>&1"


rule preprocess_voc:
    input:
        raw_ready("voc"),
    output:
        train=f"{RESULTS}/preprocessed/voc/train.h5",
        val=f"{RESULTS}/preprocessed/voc/val.h5",
        # real data only: VOC2012 seg val, flagged as overlapping SBD train
        **({} if SYNTHETIC else {"val2012": f"{RESULTS}/preprocessed/voc/val2012.h5"}),
    params:
        voc2011=raw_dir("voc2011"),
        sbd=raw_dir("sbd"),
        out_dir=lambda wc, output: os.path.dirname(output.train),
        check=("--check-md5 " if CHECK_COUNTS else "") + ("" if SYNTHETIC else arg("--voc2012", raw_dir("voc2012"))),
    resources:
        **resources_for("preprocess_voc"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/preprocess_voc.log",
    shell:
        "segbench preprocess-voc --voc2011 {params.voc2011:q} --sbd {params.sbd:q} --out-dir {params.out_dir:q}"
        " {params.check} > {log:q} 2>&1"


rule preprocess_nyud:
    input:
        raw_ready("nyud"),
    output:
        train=f"{RESULTS}/preprocessed/nyud/train.h5",
        test=f"{RESULTS}/preprocessed/nyud/test.h5",
    params:
        raw_dir=lambda wc, input: os.path.dirname(input[0]),
        out_dir=lambda wc, output: os.path.dirname(output.train),
        check="--check-counts" if CHECK_COUNTS else "",
    resources:
        **resources_for("preprocess_nyud"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/preprocess_nyud.log",
    shell:
        "segbench preprocess-nyud --raw-dir {params.raw_dir:q} --out-dir {params.out_dir:q} {params.check} > {log:q} 2>&1"


# HHA: as many worker processes as the job's CPUs and memory hold (resources.hha_processes), and it asks SLURM
# for those CPUs; one for the twin's few small frames (seconds), so that it does not wait for free cores.
HHA_RESOURCES = resources_for("hha_nyud")
HHA_THREADS = 1 if SYNTHETIC else hha_processes(HHA_RESOURCES)


rule hha_nyud:
    input:
        store=f"{RESULTS}/preprocessed/nyud/{{split}}.h5",
        # the HHA mean comes from the train split: other splits read it from the train HHA store
        train_hha=lambda wc: [] if wc.split == "train" else [f"{RESULTS}/preprocessed/nyud/train-hha.h5"],
    output:
        store=f"{RESULTS}/preprocessed/nyud/{{split}}-hha.h5",
        pngs=directory(f"{RESULTS}/preprocessed/nyud/hha/{{split}}"),
    params:
        train_hha=lambda wc, input: " ".join(arg("--train-hha-store", p) for p in input.train_hha),
    threads: HHA_THREADS
    resources:
        **{**HHA_RESOURCES, "cpus_per_task": HHA_THREADS},
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/hha_nyud_{{split}}.log",
    shell:
        "segbench hha-nyud --store {input.store:q} --png-dir {output.pngs:q} --out {output.store:q} --threads {threads}"
        " {params.train_hha} > {log:q} 2>&1"


rule preprocess_siftflow:
    input:
        raw_ready("siftflow"),
    output:
        trainval=f"{RESULTS}/preprocessed/siftflow/trainval.h5",
        test=f"{RESULTS}/preprocessed/siftflow/test.h5",
    params:
        raw_dir=lambda wc: raw_dir("siftflow"),
        out_dir=lambda wc, output: os.path.dirname(output.trainval),
        check="--check-counts" if CHECK_COUNTS else "",
    resources:
        **resources_for("preprocess_siftflow"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/preprocess_siftflow.log",
    shell:
        "segbench preprocess-siftflow --raw-dir {params.raw_dir:q} --out-dir {params.out_dir:q} {params.check} > {log:q} 2>&1"


rule dataset_stats:
    input:
        lambda wc: [f"{RESULTS}/preprocessed/{wc.dataset}/{split}.h5" for split in SPLITS[wc.dataset]],
    output:
        f"{RESULTS}/stats/{{dataset}}.json",
    params:
        check="--check-counts" if CHECK_COUNTS else "",
    resources:
        **resources_for("dataset_stats"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/dataset_stats_{{dataset}}.log",
    shell:
        "segbench dataset-stats {wildcards.dataset} --store {input:q} --out {output:q} {params.check} > {log:q} 2>&1"
