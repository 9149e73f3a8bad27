# One job per (layer, dictionary size): encode the held-out tokens once with the SAE and derive
# the feature browser's data (densities, top and sampled contexts, logit lens).
rule features:
    input:
        stage_inputs("features"),
    output:
        stage_outputs("features"),
    log:
        stage_log("features"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("features"),
    threads: workflow.cores
    resources:
        gpu=1,
    wildcard_constraints:
        layer=r"\d+",
        size=r"\d+",
    shell:
        stage_shell("features")
