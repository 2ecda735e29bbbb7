rule matrices:
    input:
        baseline="results/{model}/baseline/evaluation.parquet",
        ablations="results/{model}/ablations/{selector}",
    output:
        matrix="results/{model}/matrices/{selector}.parquet",
        summary="results/{model}/matrices/{selector}.summary.parquet",
    log:
        "logs/matrices/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        n_boot=get_bootstrap("n"),
        seed=get_bootstrap("seed"),
        tables=get_ablation_tables,
    shell:
        "culture-neurons matrices --baseline {input.baseline} --ablations {params.tables}"
        " --selector {wildcards.selector} --n-boot {params.n_boot} --seed {params.seed}"
        " --out {output.matrix} --summary-out {output.summary} > {log} 2>&1"


rule figures:
    input:
        matrix="results/{model}/matrices/{selector}.parquet",
        masks="results/{model}/masks/{selector}.zarr",
    output:
        heatmap=report(
            multiext("results/figures/{model}/{selector}_ablation", ".png", ".pdf"),
            caption="../report/ablation_heatmap.rst",
            category="Ablation heatmaps",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "selector": "{selector}",
                "figure": "heatmaps",
            },
        ),
        layers=report(
            multiext("results/figures/{model}/{selector}_layers", ".png", ".pdf"),
            caption="../report/layer_distribution.rst",
            category="Layer distribution",
            subcategory="{model}",
            labels={"model": "{model}", "selector": "{selector}", "figure": "layers"},
        ),
    log:
        "logs/figures/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        heatmap=lambda wildcards, output: output.heatmap[0].removesuffix(".png"),
        layers=lambda wildcards, output: output.layers[0].removesuffix(".png"),
    shell:
        "culture-neurons figures --model {wildcards.model} --selector {wildcards.selector}"
        " --matrix {input.matrix} --masks {input.masks}"
        " --heatmap-prefix {params.heatmap} --layers-prefix {params.layers} > {log} 2>&1"


rule baseline_figure:
    input:
        identification=expand(
            "results/{model}/baseline/identification.parquet", model=model_names()
        ),
        evaluation=expand(
            "results/{model}/baseline/evaluation.parquet", model=model_names()
        ),
    output:
        figure=report(
            multiext("results/figures/baseline_accuracy", ".png", ".pdf"),
            caption="../report/baseline_accuracy.rst",
            category="Baseline accuracy",
        ),
        table="results/summary/baseline_accuracy.csv",
    log:
        "logs/figures/baseline_accuracy.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        baselines=get_baseline_specs,
        prefix=lambda wildcards, output: output.figure[0].removesuffix(".png"),
    shell:
        "culture-neurons baseline-figure --baselines {params.baselines}"
        " --table {output.table} --out-prefix {params.prefix} > {log} 2>&1"


rule summary:
    input:
        get_all_summaries,
    output:
        report(
            multiext("results/summary/table2", ".csv", ".md", ".tex"),
            caption="../report/table2.rst",
            category="Table 2",
        ),
    log:
        "logs/summary.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        summaries=get_summary_specs,
        prefix=lambda wildcards, output: output[0].removesuffix(".csv"),
    shell:
        "culture-neurons summary --summaries {params.summaries}"
        " --out-prefix {params.prefix} > {log} 2>&1"
