rule matrices:
    input:
        baseline="results/{model}/baseline/evaluation.parquet",
        ablations="results/{model}/ablations/{selector}",
        sweeps=get_sweep_dirs,
    output:
        matrix="results/{model}/matrices/{selector}.parquet",
        summary="results/{model}/matrices/{selector}.summary.parquet",
        significance="results/{model}/matrices/{selector}.significance.parquet",
        sweep="results/{model}/matrices/sweep/{selector}.parquet",
        sweep_summary="results/{model}/matrices/sweep/{selector}.summary.parquet",
        sweep_significance="results/{model}/matrices/sweep/{selector}.significance.parquet",
    log:
        "logs/matrices/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        n_boot=get_bootstrap("n"),
        seed=get_bootstrap("seed"),
        tables=get_ablation_tables,
        sweep_tables=get_sweep_tables,
        ratio=headline_ratio(),
        intervention=wildcard_intervention,
    shell:
        "culture-neurons matrices --baseline {input.baseline} --ablations {params.tables}"
        " --selector {wildcards.selector} --n-boot {params.n_boot} --seed {params.seed}"
        " --out {output.matrix} --summary-out {output.summary}"
        " --significance-out {output.significance} --ratio {params.ratio}"
        " --intervention {params.intervention} --sweep-ablations {params.sweep_tables}"
        " --sweep-out {output.sweep} --sweep-summary-out {output.sweep_summary}"
        " --sweep-significance-out {output.sweep_significance} > {log} 2>&1"


use rule matrices as intervention_matrices with:
    input:
        baseline="results/{model}/baseline/evaluation.parquet",
        ablations="results/{model}/interventions/{intervention}/ablations/{selector}",
        sweeps=get_sweep_dirs,
    output:
        matrix="results/{model}/interventions/{intervention}/matrices/{selector}.parquet",
        summary="results/{model}/interventions/{intervention}/matrices/{selector}.summary.parquet",
        significance="results/{model}/interventions/{intervention}/matrices/{selector}.significance.parquet",
        sweep="results/{model}/interventions/{intervention}/matrices/sweep/{selector}.parquet",
        sweep_summary="results/{model}/interventions/{intervention}/matrices/sweep/{selector}.summary.parquet",
        sweep_significance="results/{model}/interventions/{intervention}/matrices/sweep/{selector}.significance.parquet",
    log:
        "logs/matrices/{model}/{intervention}/{selector}.log",


rule dose_response:
    input:
        get_dose_response_input,
    output:
        table="results/{model}/dose_response.csv",
        figures=report(
            expand(
                "results/figures/{{model}}/dose_response_{intervention}{ext}",
                intervention=list(intervention_runs()),
                ext=[".png", ".pdf"],
            ),
            caption="../report/dose_response.rst",
            category="Dose-response",
            subcategory="{model}",
        ),
    log:
        "logs/dose_response/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        sweeps=get_dose_response_args,
        n_boot=get_bootstrap("n"),
        seed=get_bootstrap("seed"),
        figure_dir=lambda wildcards: f"results/figures/{wildcards.model}",
    shell:
        "culture-neurons dose-response --model {wildcards.model} --sweeps {params.sweeps}"
        " --n-boot {params.n_boot} --seed {params.seed} --table-out {output.table}"
        " --figure-dir {params.figure_dir} > {log} 2>&1"


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


use rule figures as intervention_figures with:
    input:
        matrix="results/{model}/interventions/{intervention}/matrices/{selector}.parquet",
        masks="results/{model}/masks/{selector}.zarr",
        significance="results/{model}/interventions/{intervention}/matrices/{selector}.significance.parquet",
    output:
        heatmap=multiext(
            "results/figures/{model}/{intervention}/{selector}_ablation",
            ".png",
            ".pdf",
        ),
        layers=multiext(
            "results/figures/{model}/{intervention}/{selector}_layers", ".png", ".pdf"
        ),
        significance=multiext(
            "results/figures/{model}/{intervention}/{selector}_significance",
            ".png",
            ".pdf",
        ),
    log:
        "logs/figures/{model}/{intervention}/{selector}.log",


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
        sweep_summaries=get_sweep_summaries,
        sweep_significance=get_sweep_significance,
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
        sweep=report(
            multiext("results/summary/table2_sweep", ".csv", ".md"),
            caption="../report/table2_sweep.rst",
            category="Table 2",
        ),
    log:
        "logs/summary.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        summaries=get_summary_specs,
        significance=get_significance_specs,
        sweep_summaries=get_sweep_specs("summary"),
        sweep_significance=get_sweep_specs("significance"),
        prefix=lambda wildcards, output: output.table2[0].removesuffix(".csv"),
    shell:
        "culture-neurons summary --summaries {params.summaries}"
        " --significance {params.significance} --sweep-summaries {params.sweep_summaries}"
        " --sweep-significance {params.sweep_significance}"
        " --out-prefix {params.prefix} > {log} 2>&1"


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
