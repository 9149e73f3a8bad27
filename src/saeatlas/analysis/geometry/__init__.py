"""The geometry of the feature cloud at four scales (Li, Michaud, Baek, Engels, Sun, Tegmark 2024,
*The Geometry of Concepts*; and *Scaling Monosemanticity*'s feature neighbourhoods), one module per
scale, each a pure ``run(config, inputs) -> AnalysisOutput`` judged against a null:

- ``neighbours``: nearest decoder neighbours and UMAP maps (per size and all sizes jointly);
- ``crystals``: word-pair parallelograms in activation and feature space, before/after LDA;
- ``lobes``: co-occurrence lobes vs geometric clusters (AMI, classifier accuracy, domains);
- ``galaxy``: the covariance eigenvalue spectrum and the clustering (neg)entropy.
"""
