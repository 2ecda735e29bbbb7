rule matrices:
    input:
        baseline=layout.baseline("{model}", "evaluation"),
        ablations=layout.ablation_dir("{model}", "{selector}", HEADLINE),
        sweeps=get_sweep_dirs,
    output:
        matrix=layout.matrix("{model}", "{selector}", HEADLINE),
        summary=layout.matrix("{model}", "{selector}", HEADLINE, "summary"),
        significance=layout.matrix("{model}", "{selector}", HEADLINE, "significance"),
        sweep=layout.sweep_matrix("{model}", "{selector}", HEADLINE),
        sweep_summary=layout.sweep_matrix("{model}", "{selector}", HEADLINE, "summary"),
        sweep_significance=layout.sweep_matrix(
            "{model}", "{selector}", HEADLINE, "significance"
        ),
    log:
        "logs/matrices/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        n_boot=config["bootstrap"]["n"],
        seed=config["bootstrap"]["seed"],
        tables=lambda wildcards, input: rule_args.ablation_tables(
            PLAN, wildcards.selector, input.ablations
        ),
        sweep_tables=lambda wildcards, input: rule_args.sweep_tables(
            PLAN, wildcards.selector, input.sweeps
        ),
        ratio=PLAN.headline_ratio,
        intervention=intervention_of,
    shell:
        "culture-neurons matrices --baseline {input.baseline} --ablations {params.tables}"
        " --selector {wildcards.selector} --n-boot {params.n_boot} --seed {params.seed}"
        " --out {output.matrix} --summary-out {output.summary}"
        " --significance-out {output.significance} --ratio {params.ratio}"
        " --intervention {params.intervention} --sweep-ablations {params.sweep_tables}"
        " --sweep-out {output.sweep} --sweep-summary-out {output.sweep_summary}"
        " --sweep-significance-out {output.sweep_significance} > {log} 2>&1"


use rule matrices as matrices_intervention with:
    input:
        baseline=layout.baseline("{model}", "evaluation"),
        ablations=layout.ablation_dir("{model}", "{selector}", "{intervention}"),
        sweeps=get_sweep_dirs,
    output:
        matrix=layout.matrix("{model}", "{selector}", "{intervention}"),
        summary=layout.matrix("{model}", "{selector}", "{intervention}", "summary"),
        significance=layout.matrix(
            "{model}", "{selector}", "{intervention}", "significance"
        ),
        sweep=layout.sweep_matrix("{model}", "{selector}", "{intervention}"),
        sweep_summary=layout.sweep_matrix(
            "{model}", "{selector}", "{intervention}", "summary"
        ),
        sweep_significance=layout.sweep_matrix(
            "{model}", "{selector}", "{intervention}", "significance"
        ),
    log:
        "logs/matrices/{model}/{intervention}/{selector}.log",


rule dose_response:
    input:
        get_dose_response_input,
    output:
        table=layout.dose_response_table("{model}"),
        figures=report(
            PLAN.dose_response_figures("{model}"),
            caption="../report/dose_response.rst",
            category="Dose-response",
            subcategory="{model}",
        ),
    log:
        "logs/dose_response/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        sweeps=lambda wildcards, input: rule_args.named(
            zip([s for s, _ in PLAN.sweep_runs()], input)
        ),
        n_boot=config["bootstrap"]["n"],
        seed=config["bootstrap"]["seed"],
        figure_dir=lambda wildcards: layout.figures_dir(wildcards.model),
    shell:
        "culture-neurons dose-response --model {wildcards.model} --sweeps {params.sweeps}"
        " --n-boot {params.n_boot} --seed {params.seed} --table-out {output.table}"
        " --figure-dir {params.figure_dir} > {log} 2>&1"


rule figures:
    input:
        matrix=layout.matrix("{model}", "{selector}", HEADLINE),
        masks=layout.masks("{model}", "{selector}"),
        significance=layout.matrix("{model}", "{selector}", HEADLINE, "significance"),
    output:
        heatmap=report(
            multiext(
                layout.selector_figure("{model}", "{selector}", HEADLINE, "ablation"),
                *layout.FIGURE_EXTS,
            ),
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
            multiext(
                layout.selector_figure("{model}", "{selector}", HEADLINE, "layers"),
                *layout.FIGURE_EXTS,
            ),
            caption="../report/layer_distribution.rst",
            category="Layer distribution",
            subcategory="{model}",
            labels={"model": "{model}", "selector": "{selector}", "figure": "layers"},
        ),
        significance=report(
            multiext(
                layout.selector_figure(
                    "{model}", "{selector}", HEADLINE, "significance"
                ),
                *layout.FIGURE_EXTS,
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


use rule figures as figures_intervention with:
    input:
        matrix=layout.matrix("{model}", "{selector}", "{intervention}"),
        masks=layout.masks("{model}", "{selector}"),
        significance=layout.matrix(
            "{model}", "{selector}", "{intervention}", "significance"
        ),
    output:
        heatmap=multiext(
            layout.selector_figure(
                "{model}", "{selector}", "{intervention}", "ablation"
            ),
            *layout.FIGURE_EXTS,
        ),
        layers=multiext(
            layout.selector_figure(
                "{model}", "{selector}", "{intervention}", "layers"
            ),
            *layout.FIGURE_EXTS,
        ),
        significance=multiext(
            layout.selector_figure(
                "{model}", "{selector}", "{intervention}", "significance"
            ),
            *layout.FIGURE_EXTS,
        ),
    log:
        "logs/figures/{model}/{intervention}/{selector}.log",


rule baseline_figure:
    input:
        identification=[layout.baseline(m, "identification") for m in PLAN.model_names],
        evaluation=[layout.baseline(m, "evaluation") for m in PLAN.model_names],
    output:
        figure=report(
            multiext(layout.baseline_figure(), *layout.FIGURE_EXTS),
            caption="../report/baseline_accuracy.rst",
            category="Baseline accuracy",
        ),
        table=layout.summary("baseline_accuracy.csv"),
    log:
        "logs/figures/baseline_accuracy.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        baselines=rule_args.baselines(PLAN),
        prefix=lambda wildcards, output: output.figure[0].removesuffix(".png"),
    shell:
        "culture-neurons baseline-figure --baselines {params.baselines}"
        " --table {output.table} --out-prefix {params.prefix} > {log} 2>&1"


rule summary:
    input:
        summaries=list(PLAN.summary_paths("summary").values()),
        significance=list(PLAN.summary_paths("significance").values()),
        sweep_summaries=list(PLAN.sweep_paths("summary").values()),
        sweep_significance=list(PLAN.sweep_paths("significance").values()),
    output:
        table2=report(
            multiext(layout.summary("table2"), ".csv", ".md", ".tex"),
            caption="../report/table2.rst",
            category="Table 2",
        ),
        significance=report(
            layout.summary("table2_significance.csv"),
            caption="../report/significance_table.rst",
            category="Per-source significance",
        ),
        sweep=report(
            multiext(layout.summary("table2_sweep"), ".csv", ".md"),
            caption="../report/table2_sweep.rst",
            category="Table 2",
        ),
        sites=[
            layout.summary(f"table2_{site}{ext}")
            for site in PLAN.extra_sites
            for ext in (".csv", ".md", ".tex", "_significance.csv")
        ],
    log:
        "logs/summary.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        summaries=rule_args.summary_specs(PLAN, "summary"),
        significance=rule_args.summary_specs(PLAN, "significance"),
        sweep_summaries=rule_args.sweep_specs(PLAN, "summary"),
        sweep_significance=rule_args.sweep_specs(PLAN, "significance"),
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
        selectors=layout.overlap("{model}", "selectors.parquet"),
        pairs=layout.overlap("{model}", "culture_pairs.parquet"),
        correlation=report(
            layout.overlap("{model}", "correlation.csv"),
            caption="../report/overlap_table.rst",
            category="Overlap",
            subcategory="{model}",
        ),
        figure=report(
            multiext(layout.model_figure("{model}", "overlap"), *layout.FIGURE_EXTS),
            caption="../report/overlap.rst",
            category="Overlap",
            subcategory="{model}",
        ),
    log:
        "logs/overlap/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        args=lambda wildcards, input: rule_args.overlap(
            PLAN, input.masks, input.matrices
        ),
        n_boot=config["bootstrap"]["n"],
        seed=config["bootstrap"]["seed"],
        prefix=lambda wildcards, output: output.figure[0].removesuffix(".png"),
    shell:
        "culture-neurons overlap --model {wildcards.model} {params.args}"
        " --n-boot {params.n_boot} --seed {params.seed}"
        " --selectors-out {output.selectors} --pairs-out {output.pairs}"
        " --correlation-out {output.correlation} --figure-prefix {params.prefix} > {log} 2>&1"
