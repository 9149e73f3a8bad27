# The geometry of the feature cloud (analysis/geometry/): neighbourhoods and UMAP maps, word-pair
# crystals, co-occurrence lobes (one job per size), the galaxy spectrum and entropy. All per layer.


rule neighbours:
    input:
        stage_inputs("neighbours"),
    output:
        stage_outputs("neighbours"),
    log:
        stage_log("neighbours"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("neighbours"),
    threads: workflow.cores
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("neighbours")


rule crystals:
    input:
        stage_inputs("crystals"),
    output:
        stage_outputs("crystals"),
    log:
        stage_log("crystals"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("crystals"),
    threads: workflow.cores
    resources:
        gpu=1,
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("crystals")


rule lobes:
    input:
        stage_inputs("lobes"),
    output:
        stage_outputs("lobes"),
    log:
        stage_log("lobes"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("lobes"),
    threads: workflow.cores
    wildcard_constraints:
        layer=r"\d+",
        size=r"\d+",
    shell:
        stage_shell("lobes")


rule galaxy:
    input:
        stage_inputs("galaxy"),
    output:
        stage_outputs("galaxy"),
    log:
        stage_log("galaxy"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("galaxy"),
    threads: workflow.cores
    wildcard_constraints:
        layer=r"\d+",
    shell:
        stage_shell("galaxy")
