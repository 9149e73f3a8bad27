"""The study report (results/report/index.html) and the feature browser (results/report/features/)."""
