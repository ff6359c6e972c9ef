#!/usr/bin/env bash
# The pictures of `rigmind top` in docs/img/: runs tests/top.rs with
# RIGMIND_TOP_SHOTS set (the TestBackend render and the tmux capture of a real
# rig, as ANSI text), turns each into HTML (scripts/ansi2html.py) and
# screenshots it with headless Chromium (apt-get install -y chromium tmux).
#
#   scripts/top-shots.sh            # writes docs/img/top-testbackend.png, top-tmux.png
set -euo pipefail
cd "$(dirname "$0")/.."
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "top-shots: no chromium (apt-get install -y chromium)" >&2; exit 1; }
shots=$(mktemp -d)
trap 'rm -rf "$shots"' EXIT
RIGMIND_TOP_SHOTS=$shots cargo test --test top -- \
    the_screen_of_a_running_rig_fits_80x24_and_shows_it_all top_runs_in_a_real_terminal_and_q_quits
for shot in testbackend tmux; do
    [ -s "$shots/$shot.ans" ] || { echo "top-shots: the test wrote no $shot.ans (tmux missing?)" >&2; exit 1; }
    python3 scripts/ansi2html.py "$shots/$shot.ans" "rigmind top ($shot)" > "$shots/$shot.html"
    # 80 columns of a 15 px monospace font are about 730 px; 24 rows 18 px each.
    "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --window-size=760,460 --screenshot="docs/img/top-$shot.png" "file://$shots/$shot.html"
done
echo "wrote docs/img/top-testbackend.png docs/img/top-tmux.png"
