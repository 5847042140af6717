# Traceability: per-class results, training curves, the Figure 4-like predictions, Table 3's submission, the
# authors' released models (real data), the tables and the provenance as HTML pages, and the Snakemake report.
# Every job writes the provenance sidecar <output>.provenance.json of its outputs (helpers in common.smk).

localrules:
    report,


rule perclass:
    input:
        evaluations(),
    output:
        csv=[perclass_csv(m) for m in evaluations()],
        figures=[
            report(f"{RESULTS}/figures/perclass/{run}.png", caption="../report/perclass.rst", category="Table 2",
                   subcategory="Per-class IU", labels={"run": run, "figure": "per-class IU"})
            for run in PERCLASS_FIGURES
        ],
        pdf=[f"{RESULTS}/figures/perclass/{run}.pdf" for run in PERCLASS_FIGURES],
        provenance=sidecars(*[perclass_csv(m) for m in evaluations()],
                            *figure_files(*[f"{RESULTS}/figures/perclass/{run}" for run in PERCLASS_FIGURES])),
    params:
        figures=" ".join(arg("--figure", f"{run}={path}") for run, path in PERCLASS_FIGURES.items()),
        figure_dir=lambda wc, output: os.path.dirname(output.figures[0]),
        provenance=PROVENANCE,
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/trace/perclass.log",
    shell:
        "segbench perclass-all --metrics {input:q} {params.figures} --figure-dir {params.figure_dir:q}"
        " {params.provenance} > {log:q} 2>&1"


rule curves:
    input:
        [path for run in RUNS for path in seeds_of(run, PATHS.log)],
    output:
        figures=[
            report(f"{RESULTS}/figures/curves/{run}.png", caption="../report/curves.rst",
                   category=curve_category(run), subcategory="Training curves",
                   labels={"run": run, "figure": "training curves"})
            for run in RUNS
        ],
        pdf=[f"{RESULTS}/figures/curves/{run}.pdf" for run in RUNS],
        provenance=sidecars(*figure_files(*[f"{RESULTS}/figures/curves/{run}" for run in RUNS])),
    params:
        runs=" ".join(arg("--run", f"{run}={','.join(seeds_of(run, PATHS.log))}") for run in RUNS),
        out_dir=lambda wc, output: os.path.dirname(output.figures[0]),
        provenance=PROVENANCE,
    resources:
        **resources_for("fig5"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/trace/curves.log",
    shell:
        "segbench curves-all {params.runs} --out-dir {params.out_dir:q} {params.provenance} > {log:q} 2>&1"


rule qualitative:
    input:
        store=lambda wc: QUALITATIVE[wc.dataset]["store"],
        models=lambda wc: list(QUALITATIVE[wc.dataset]["models"].values()),
    output:
        figure=report(f"{RESULTS}/figures/qualitative/{{dataset}}.png", caption="../report/qualitative.rst",
                      category=lambda wc: QUALITATIVE[wc.dataset]["category"], subcategory="What the nets see",
                      labels={"dataset": "{dataset}", "figure": "predictions"}),
        pdf=f"{RESULTS}/figures/qualitative/{{dataset}}.pdf",
        provenance=sidecars(*figure_files(f"{RESULTS}/figures/qualitative/{{dataset}}")),
    wildcard_constraints:
        dataset="|".join(QUALITATIVE),
    params:
        models=lambda wc: " ".join(arg("--model", f"{net}={path}")
                                   for net, path in QUALITATIVE[wc.dataset]["models"].items()),
        prefix=lambda wc, output: output.figure[: -len(".png")],
        device=config["device"],
        provenance=PROVENANCE,
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/trace/qualitative_{{dataset}}.log",
    shell:
        "segbench qualitative --store {input.store:q} {params.models} --count 4 --out-figure {params.prefix:q}"
        " --device {params.device} --threads {threads} {params.provenance} > {log:q} 2>&1"


# Table 3: the VOC test images come only from the evaluation server (registration); the twin has a test split
# of its own, in the layout of the server's VOC2012test.tar.

if SYNTHETIC:

    rule synth_voc_test:
        output:
            f"{RESULTS}/raw/voc-test{{year}}/{MANIFEST}",
        wildcard_constraints:
            year="|".join(TEST_YEARS),
        params:
            out_dir=lambda wc, output: os.path.dirname(output[0]),
            c=config["data"]["synthetic"]["voc"],
            n_images=TWIN_TEST_IMAGES,
        resources:
            **resources_for("synth_voc"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/synth_voc_test{{year}}.log",
        shell:
            "segbench synth-voc-test --out-dir {params.out_dir:q} --year {wildcards.year} --n-images {params.n_images}"
            " --image-size {params.c[image_size]} --seed {params.c[seed]} > {log:q} 2>&1"

else:

    ruleorder: voc_test_images > download  # download's raw/{dataset}/ would also match raw/voc-test<year>/

    rule voc_test_images:
        localrule: True  # a download: on the host that runs Snakemake, not a compute node (see data.smk)
        input:
            CHECKSUM_TABLE,  # (no checksum is published for the test archives: only the rehearsal's mirror first)
        output:
            f"{RESULTS}/raw/voc-test{{year}}/{MANIFEST}",
        wildcard_constraints:
            year="|".join(TEST_YEARS),
        params:
            dest_dir=lambda wc, output: os.path.dirname(output[0]),
            data_root=opt("--data-root", config["data"]["data_root"]),
        resources:
            **resources_for("download"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/data/voc_test_images{{year}}.log",
        shell:
            "segbench voc-test-images --year {wildcards.year} --dest-dir {params.dest_dir:q} {params.data_root}"
            " > {log:q} 2>&1"


rule preprocess_voc_test:
    input:
        f"{RESULTS}/raw/voc-test{{year}}/{MANIFEST}",
    output:
        store=f"{RESULTS}/preprocessed/voc/test{{year}}.h5",
        provenance=sidecars(f"{RESULTS}/preprocessed/voc/test{{year}}.h5"),
    wildcard_constraints:
        year="|".join(TEST_YEARS),
    params:
        raw_dir=lambda wc, input: os.path.dirname(input[0]),
        provenance=PROVENANCE,
    resources:
        **resources_for("preprocess_voc"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/data/preprocess_voc_test{{year}}.log",
    shell:
        "segbench preprocess-voc-test --raw-dir {params.raw_dir:q} --out {output.store:q} --year {wildcards.year}"
        " {params.provenance} > {log:q} 2>&1"


# The archive is the output; the folder it packs (submission/results/VOC<year>/Segmentation/comp6_test_cls/) is
# not declared, so that Snakemake puts no timestamp file of its own among the PNGs.
rule submission:
    input:
        store=f"{RESULTS}/preprocessed/voc/test{{year}}.h5",
        weights=PATHS.model(SUBMISSION_RUN, SEEDS[0]),
    output:
        archive=f"{RESULTS}/submission/VOC{{year}}.tar.gz",
        provenance=sidecars(f"{RESULTS}/submission/VOC{{year}}.tar.gz"),
    wildcard_constraints:
        year="|".join(TEST_YEARS),
    params:
        out_dir=lambda wc, output: os.path.dirname(output.archive),
        device=config["device"],
        provenance=PROVENANCE,
    threads: 1
    resources:
        **resources_for("evaluate"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/trace/submission_VOC{{year}}.log",
    shell:
        "segbench submission --store {input.store:q} --weights {input.weights:q} --out-dir {params.out_dir:q}"
        " --year {wildcards.year} --archive {output.archive:q} --device {params.device} --threads {threads}"
        " {params.provenance} > {log:q} 2>&1"


rule table3:
    input:
        [f"{RESULTS}/submission/VOC{year}.tar.gz" for year in TEST_YEARS],
    output:
        multiext(f"{RESULTS}/tables/table3", ".csv", ".tex", ".md", ".provenance.json"),
    params:
        submissions=lambda wc, input: " ".join(arg("--submission", f"{y}={path}") for y, path in zip(TEST_YEARS, input)),
        note=DATA_NOTE,
        prefix=lambda wc, output: output[0][: -len(".csv")],
        provenance=PROVENANCE,
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/table3.log",
    shell:
        "segbench table3 {params.submissions} --out-prefix {params.prefix:q} --note {params.note:q}"
        " {params.provenance} > {log:q} 2>&1"


# The authors' released FCN-32s / 16s / 8s (real data: Google Drive downloads), scored with our protocol.

if RELEASED_VARIANTS:

    rule released_model:
        localrule: True  # a download: on the host that runs Snakemake, not a compute node (see data.smk)
        input:
            CHECKSUM_TABLE,
        output:
            model=f"{RESULTS}/released/{{variant}}/model.pt",
            provenance=sidecars(f"{RESULTS}/released/{{variant}}/model.pt"),
        params:
            cache=config["pretrain"]["cache"],
            checksums=opt("--checksums", CHECKSUMS),
            provenance=PROVENANCE,
        wildcard_constraints:
            variant="|".join(RELEASED_VARIANTS),
        resources:
            **resources_for("download"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/trace/released_model_{{variant}}.log",
        shell:
            "segbench released-model {wildcards.variant} --out {output.model:q} --cache {params.cache:q}"
            " {params.checksums} {params.provenance} > {log:q} 2>&1"

    rule evaluate_released:
        input:
            store=f"{RESULTS}/preprocessed/voc/val.h5",
            weights=f"{RESULTS}/released/{{variant}}/model.pt",
        output:
            metrics=f"{RESULTS}/evaluate/released-{{variant}}/val.json",
            provenance=sidecars(f"{RESULTS}/evaluate/released-{{variant}}/val.json"),
        params:
            device=config["device"],
            provenance=PROVENANCE,
        wildcard_constraints:
            variant="|".join(RELEASED_VARIANTS),
        threads: 1
        resources:
            **resources_for("evaluate"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/evaluate/released-{{variant}}.log",
        shell:
            "segbench evaluate --store {input.store:q} --weights {input.weights:q} --out {output.metrics:q}"
            " --device {params.device} --threads {threads} {params.provenance} > {log:q} 2>&1"

    rule table_released:
        input:
            [f"{RESULTS}/evaluate/released-{v}/val.json" for v in RELEASED_VARIANTS],
        output:
            multiext(f"{RESULTS}/tables/released", ".csv", ".tex", ".md", ".provenance.json"),
        params:
            runs=lambda wc, input: " ".join(arg("--run", f"{v}={path}") for v, path in zip(RELEASED_VARIANTS, input)),
            note=DATA_NOTE,
            prefix=lambda wc, output: output[0][: -len(".csv")],
            provenance=PROVENANCE,
        resources:
            **resources_for("table2"),
        conda:
            "../envs/segbench.yaml"
        log:
            f"{LOGS}/report/table_released.log",
        shell:
            "segbench table-released {params.runs} --out-prefix {params.prefix:q} --note {params.note:q}"
            " {params.provenance} > {log:q} 2>&1"


# The report: every table as an HTML page with the runs behind its rows, the provenance page, then
# Snakemake's own report of everything flagged with report().


rule report_pages:
    input:
        tables=[f"{prefix}.md" for prefix, *_ in TABLE_PAGES.values()],
        provenance=sidecars(*[prefix for prefix, *_ in TABLE_PAGES.values()], *report_figures()),
    output:
        pages=[
            report(f"{PAGES}/{name}.html", caption=f"../report/{rst}", category=category, subcategory="Table",
                   labels={"table": name})
            for name, (_, _, rst, category) in TABLE_PAGES.items()
        ],
        provenance=report(f"{PAGES}/provenance.html", caption="../report/provenance.rst", category="Provenance",
                          labels={"page": "provenance"}),
    params:
        tables=" ".join(arg("--table", f"{name}={prefix}") for name, (prefix, *_) in TABLE_PAGES.items()),
        titles=" ".join(arg("--title", f"{name}={title}") for name, (_, title, *_) in TABLE_PAGES.items()),
        figures=report_figures(),
        out_dir=lambda wc, output: os.path.dirname(output.provenance),
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/trace/report_pages.log",
    shell:
        "segbench report-pages {params.tables} {params.titles} --figure {params.figures:q} --out-dir {params.out_dir:q}"
        " > {log:q} 2>&1"


rule report:
    input:
        lambda wc: [f for f in final_outputs() if f != REPORT],
        rules.report_pages.output,
    output:
        REPORT,
    params:
        snakemake=f"{shlex.quote(sys.executable)} -m snakemake",
        snakefile=workflow.main_snakefile,
        config=CONFIG_JSON,  # the resolved configuration of this run: the report describes the same jobs
    resources:
        **resources_for("table2"),
    conda:
        "../envs/segbench.yaml"
    log:
        f"{LOGS}/report/report.log",
    shell:
        "{params.snakemake} --snakefile {params.snakefile:q} --configfile {params.config:q} --report {output:q} > {log:q} 2>&1"
