# Per layer, across every dictionary size: feature splitting between adjacent sizes, and how
# feature counts, densities and concept coverage scale with size. CPU work (numpy/scipy).
rule splitting:
    input:
        stage_inputs("splitting"),
    output:
        stage_outputs("splitting"),
    log:
        stage_log("splitting"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("splitting"),
    threads: workflow.cores
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("splitting")


rule scaling:
    input:
        stage_inputs("scaling"),
    output:
        stage_outputs("scaling"),
    log:
        stage_log("scaling"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("scaling"),
    threads: workflow.cores
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("scaling")
