rule corpus:
    input:
        stage_inputs("corpus"),
    output:
        stage_outputs("corpus"),
    log:
        stage_log("corpus"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("corpus"),
    shell:
        stage_shell("corpus")
