#!/usr/bin/env bash
# Render two pages of the built site to PNG with headless Chromium (for the
# README and release notes): docs/img/screenshot-namespaces.png and
# docs/img/screenshot-cli.png. Builds the site first (docs/build.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "needs Chromium (Debian: apt-get install chromium)" >&2; exit 1; }
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
SITE_DIR="$site" bash docs/build.sh >/dev/null
for page in namespaces cli; do
    # --no-sandbox: Chromium refuses to run its sandbox as root
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=1280,1600 --screenshot="docs/img/screenshot-$page.png" \
        "file://$site/$page/index.html" >/dev/null 2>&1
    echo "docs/img/screenshot-$page.png"
done
