rule matrices:
    input:
        baseline="results/{model}/baseline/evaluation.parquet",
        ablations="results/{model}/ablations/{selector}",
    output:
        matrix="results/{model}/matrices/{selector}.parquet",
        summary="results/{model}/matrices/{selector}.summary.parquet",
        significance="results/{model}/matrices/{selector}.significance.parquet",
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
        " --out {output.matrix} --summary-out {output.summary}"
        " --significance-out {output.significance} > {log} 2>&1"


rule figures:
    input:
        matrix="results/{model}/matrices/{selector}.parquet",
        masks="results/{model}/masks/{selector}.zarr",
        significance="results/{model}/matrices/{selector}.significance.parquet",
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
        significance=report(
            multiext(
                "results/figures/{model}/{selector}_significance", ".png", ".pdf"
            ),
            caption="../report/significance.rst",
            category="Per-source significance",
            subcategory="{model}",
            labels={
                "model": "{model}",
                "selector": "{selector}",
                "figure": "significance",
            },
        ),
    log:
        "logs/figures/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        heatmap=lambda wildcards, output: output.heatmap[0].removesuffix(".png"),
        layers=lambda wildcards, output: output.layers[0].removesuffix(".png"),
        significance=lambda wildcards, output: output.significance[0].removesuffix(
            ".png"
        ),
    shell:
        "culture-neurons figures --model {wildcards.model} --selector {wildcards.selector}"
        " --matrix {input.matrix} --masks {input.masks}"
        " --heatmap-prefix {params.heatmap} --layers-prefix {params.layers}"
        " --significance {input.significance} --significance-prefix {params.significance}"
        " > {log} 2>&1"


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
        summaries=get_all_summaries,
        significance=get_all_significance,
    output:
        table2=report(
            multiext("results/summary/table2", ".csv", ".md", ".tex"),
            caption="../report/table2.rst",
            category="Table 2",
        ),
        significance=report(
            "results/summary/table2_significance.csv",
            caption="../report/significance_table.rst",
            category="Per-source significance",
        ),
    log:
        "logs/summary.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        summaries=get_summary_specs,
        significance=get_significance_specs,
        prefix=lambda wildcards, output: output.table2[0].removesuffix(".csv"),
    shell:
        "culture-neurons summary --summaries {params.summaries}"
        " --significance {params.significance} --out-prefix {params.prefix} > {log} 2>&1"


rule overlap:
    input:
        unpack(get_overlap_input),
    output:
        selectors="results/{model}/overlap/selectors.parquet",
        pairs="results/{model}/overlap/culture_pairs.parquet",
        correlation=report(
            "results/{model}/overlap/correlation.csv",
            caption="../report/overlap_table.rst",
            category="Overlap",
            subcategory="{model}",
        ),
        figure=report(
            multiext("results/figures/{model}/overlap", ".png", ".pdf"),
            caption="../report/overlap.rst",
            category="Overlap",
            subcategory="{model}",
        ),
    log:
        "logs/overlap/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        args=get_overlap_args,
        n_boot=get_bootstrap("n"),
        seed=get_bootstrap("seed"),
        prefix=lambda wildcards, output: output.figure[0].removesuffix(".png"),
    shell:
        "culture-neurons overlap --model {wildcards.model} {params.args}"
        " --n-boot {params.n_boot} --seed {params.seed}"
        " --selectors-out {output.selectors} --pairs-out {output.pairs}"
        " --correlation-out {output.correlation} --figure-prefix {params.prefix} > {log} 2>&1"
