rule select:
    input:
        unpack(get_select_input),
    output:
        masks=directory("results/{model}/masks/{selector}.zarr"),
        report="results/{model}/masks/{selector}.json",
    log:
        "logs/select/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        selector=get_selector_json,
        ratio=config["ratio"],
        filter="" if config.get("only_correct", True) else "--all-items",
        reference=get_reference_args,
    shell:
        "culture-neurons select --store {input.store} --selector {wildcards.selector}"
        " --params {params.selector} --ratio {params.ratio} {params.filter} {params.reference}"
        " --out {output.masks} --report {output.report} > {log} 2>&1"
