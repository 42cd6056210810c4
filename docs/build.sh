#!/usr/bin/env bash
# Build the documentation site with warnings as errors.
#
# Creates (or reuses) the virtualenv .venv-docs at the repository root with
# the documentation tools and aunshare itself (editable, so the API pages
# document the working tree), then runs `mkdocs build --strict`.
#
#   PYTHON    interpreter for the virtualenv (default: python3)
#   SITE_DIR  where the HTML goes (default: site/ at the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=.venv-docs
site=${SITE_DIR:-site}

[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    'mkdocs>=1.6,<2' \
    'mkdocs-material>=9.5,<10' \
    'mkdocstrings[python]>=1.0,<2' \
    'ruff>=0.6,<1' \
    -e .

# NO_MKDOCS_2_WARNING silences a banner mkdocs-material prints about its own
# future (not a build warning).
NO_MKDOCS_2_WARNING=1 "$venv/bin/python" -m mkdocs build --strict --clean -d "$site"
echo "docs built in $site/"
