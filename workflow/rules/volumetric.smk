# Volumetric nets (config volumetric; layer config/volumetric.yaml): V-Net and 3D U-Net on the MSD-layout twin of
# Task05_Prostate (data.source synthetic) or on the Decathlon's Task05_Prostate itself (real: the checksummed
# download msd_prostate), once per seed, scored by Dice per class on held-out training cases, and their table.
# Needs common.smk (RESULTS, LOGS, SYNTHETIC, raw_ready, arg, opt, volumetric_iterations). Nothing here runs unless the config has a
# volumetric section.

VOLUMETRIC = config.get("volumetric") or {}
if SYNTHETIC:
    VOLUMETRIC_TASK = f"{RESULTS}/data/msd/Task505_TwinProstate"
    VOLUMETRIC_READY = f"{VOLUMETRIC_TASK}/dataset.json"  # written by twin_msd
else:
    VOLUMETRIC_TASK = f"{RESULTS}/raw/msd_prostate/MSD/Task05_Prostate"  # segbench.data.sources: msd_prostate
    VOLUMETRIC_READY = raw_ready("msd_prostate")
VOLUMETRIC_DIR = f"{RESULTS}/volumetric"


if VOLUMETRIC and SYNTHETIC and not VOLUMETRIC.get("twin"):
    raise WorkflowError("volumetric runs on synthetic data need volumetric.twin (n_train, n_test, shape, seed: "
                        "see config/volumetric.yaml); got none")

if VOLUMETRIC and SYNTHETIC:

    rule twin_msd:
        """The synthetic MSD task (segbench.data.synthetic.msd): NIfTI volumes and dataset.json."""
        output:
            f"{VOLUMETRIC_TASK}/dataset.json",
        params:
            out_dir=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
            c=VOLUMETRIC["twin"],
            shape=" ".join(str(n) for n in VOLUMETRIC["twin"]["shape"]),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/twin_msd.log",
        shell:
            "segbench twin-msd --out-dir {params.out_dir:q} --n-train {params.c[n_train]} --n-test {params.c[n_test]}"
            " --shape {params.shape} --seed {params.c[seed]} > {log:q} 2>&1"


if VOLUMETRIC:

    rule train_volumetric:
        """One volumetric net, one seed (segbench.training.volumetric.train_volumetric)."""
        input:
            task=VOLUMETRIC_READY,
        output:
            weights=f"{VOLUMETRIC_DIR}/{{vmodel}}/seed{{seed}}.pt",
            summary=f"{VOLUMETRIC_DIR}/{{vmodel}}/seed{{seed}}.json",
        wildcard_constraints:
            vmodel="|".join(VOLUMETRIC["models"]),
            seed=r"\d+",
        params:
            task_dir=VOLUMETRIC_TASK,
            c=VOLUMETRIC,
            patch=" ".join(str(n) for n in VOLUMETRIC["patch"]),
            iterations=lambda wc: volumetric_iterations(wc.vmodel),
            sparse=opt("--annotate-every", VOLUMETRIC.get("annotate_every")),
        resources:
            **resources_for("train_volumetric"),
        threads: VOLUMETRIC["threads"]
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/volumetric/{{vmodel}}/seed{{seed}}-train.log",
        shell:
            "segbench train-volumetric --task-dir {params.task_dir:q} --model {wildcards.vmodel} --out {output.weights:q}"
            " --seed {wildcards.seed} --width {params.c[width]} --iterations {params.iterations}"
            " --n-val {params.c[n_val]} --patch {params.patch} --recipe {params.c[recipe]} {params.sparse}"
            " --threads {threads} --device {params.c[device]} > {log:q} 2>&1"

    rule evaluate_volumetric:
        """Dice per class of one trained net on the held-out cases (segbench.evaluation.volumetric)."""
        input:
            task=VOLUMETRIC_READY,
            weights=f"{VOLUMETRIC_DIR}/{{vmodel}}/seed{{seed}}.pt",
        output:
            f"{VOLUMETRIC_DIR}/{{vmodel}}/seed{{seed}}-eval.json",
        wildcard_constraints:
            vmodel="|".join(VOLUMETRIC["models"]),
            seed=r"\d+",
        params:
            task_dir=VOLUMETRIC_TASK,
            c=VOLUMETRIC,
        resources:
            **resources_for("evaluate_volumetric"),
        threads: VOLUMETRIC["threads"]
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/volumetric/{{vmodel}}/seed{{seed}}-evaluate.log",
        shell:
            "segbench evaluate-volumetric --task-dir {params.task_dir:q} --weights {input.weights:q}"
            " --n-val {params.c[n_val]} --out {output:q} --threads {threads} --device {params.c[device]} > {log:q} 2>&1"

    rule table_volumetric:
        """Dice per class, mean ± std over seeds, beside the papers' figures (segbench.reporting.volumetric)."""
        input:
            [f"{VOLUMETRIC_DIR}/{model}/seed{seed}-eval.json" for model in VOLUMETRIC["models"]
             for seed in VOLUMETRIC["seeds"]],
        output:
            multiext(f"{RESULTS}/tables/volumetric", ".csv", ".tex", ".md"),
        params:
            # --run MODEL=EVAL per model and seed; the model is the evaluation's folder (volumetric/<model>/)
            runs=lambda wc, input: " ".join(arg("--run", f"{os.path.basename(os.path.dirname(p))}={p}") for p in input),
            prefix=lambda wc, output: os.path.splitext(output[0])[0],
            note="synthetic MSD-layout twin of Task05_Prostate" if SYNTHETIC else "MSD Task05_Prostate",
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/report/table_volumetric.log",
        shell:
            "segbench table-volumetric {params.runs} --out-prefix {params.prefix:q} --note {params.note:q} > {log:q} 2>&1"
