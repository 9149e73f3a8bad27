"""The adapters of the study's core stages (model, corpus, activations, train_sae, evaluate,
features), one module each, so that each stage's code dependencies (the import closure of its
module) are exactly what it runs. The analyses' adapters are ``analysis/<name>/stage.py``."""
