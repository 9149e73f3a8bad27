rule model:
    input:
        stage_inputs("model"),
    output:
        stage_outputs("model"),
    log:
        stage_log("model"),
    conda:
        "../../environment.yml"
    params:
        tracked=stage_params("model"),
    shell:
        stage_shell("model")
