"""Sparse autoencoders: architectures (``model``), sparse kernels (``sparse``), the trainer
(``train``) and the SAELens-compatible export/import (``io``)."""
