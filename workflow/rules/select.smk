rule select:
    input:
        unpack(get_select_input),
    output:
        masks=directory(layout.masks("{model}", "{selector}")),
        report=layout.masks_report("{model}", "{selector}"),
    log:
        "logs/select/{model}/{selector}.log",
    conda:
        "../../envs/analysis.yaml"
    params:
        selector=get_selector_json,
        ratio=config["ratio"],
        filter=only_correct_flag(),
        reference=get_reference_args,
    shell:
        "culture-neurons select --store {input.store} --selector {wildcards.selector}"
        " --params {params.selector} --ratio {params.ratio} {params.filter} {params.reference}"
        " --out {output.masks} --report {output.report} > {log} 2>&1"
