rule atlas:
    input:
        unpack(get_atlas_input),
    output:
        # A folder cannot enter a one-file HTML report (snakemake --report report.html refuses
        # it): the report shows the layer histograms, whose caption points at the site.
        site=directory(layout.atlas_dir("{model}")),
        export=layout.atlas_export("{model}"),
        figure=report(
            layout.atlas_figure("{model}"),
            caption="../report/atlas.rst",
            category="Atlas",
            subcategory="{model}",
        ),
    log:
        "logs/atlas/{model}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        args=lambda wildcards, input: rule_args.atlas(
            PLAN, input.masks, input.summaries
        ),
        neurons_per_culture=config["atlas"]["neurons_per_culture"],
        top_k=config["atlas"]["top_k"],
        n_boot=config["bootstrap"]["n"],
        seed=config["bootstrap"]["seed"],
    shell:
        "culture-neurons atlas --model {wildcards.model} --store {input.store}"
        " --items {input.item_table} {params.args}"
        " --neurons-per-culture {params.neurons_per_culture} --top-k {params.top_k}"
        " --n-boot {params.n_boot} --seed {params.seed}"
        " --out-dir {output.site} --export-out {output.export}"
        " --figure-out {output.figure} > {log} 2>&1"
