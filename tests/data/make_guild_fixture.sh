#!/bin/sh
# Makes tests/data/guild-0.9/attrs-home/runs with Guild AI 0.9.0 itself:
# runs tagged, commented, marked and labelled by `guild tag`, `guild comment`,
# `guild mark` and `guild label`, a batch (`train.py+` and its two trials) and
# a run that writes images (PNG, JPEG, GIF, TIFF).
#
#   python -m venv /tmp/guild-venv && /tmp/guild-venv/bin/pip install guildai==0.9.0 pillow
#   GUILD=/tmp/guild-venv/bin/guild sh tests/data/make_guild_fixture.sh
#
# The runs of tests/data/guild-0.9/runs were made earlier the same way, with
# commands typed by hand (projects /tmp/gproj and /tmp/gproj2); they stay as
# they are, since tests count them and name them by index.
set -eu
GUILD=${GUILD:-guild}
here=$(cd "$(dirname "$0")" && pwd)
out="$here/guild-0.9/attrs-home"
work=/tmp/runsmon-guild-fixture
rm -rf "$work"
mkdir -p "$work/proj" "$work/home"
export GUILD_HOME="$work/home"
export NO_PIP_FREEZE=1

cat > "$work/proj/train.py" <<'EOF'
lr = 0.1
epochs = 2

for step in range(1, epochs + 1):
    print(f"step: {step}")
    print(f"loss: {lr / step:.4f}")
EOF

cat > "$work/proj/images.py" <<'EOF'
import os

from PIL import Image

size = 8

os.makedirs("images", exist_ok=True)
img = Image.new("RGB", (size, size // 2 * 3), (200, 30, 30))
img.save("images/red.png")
img.convert("L").save("gray.jpg", quality=80)
img.convert("P").save("images/anim.gif")
img.save("scan.tiff")
print("loss: 0.5")
EOF

cd "$work/proj"
run() { "$GUILD" run -y "$@" >/dev/null; sleep 1; }
run train.py lr=0.3
run train.py lr=0.2
run train.py lr=0.05 --label "first try"
run train.py 'lr=[0.1,0.01]' --keep-batch
run images.py

# Runs by index as `guild runs` lists them now (1 is the newest):
# 1 images.py, 2 and 3 the batch's trials, 4 train.py+ (kept), 5 lr=0.05,
# 6 lr=0.2, 7 lr=0.3.
"$GUILD" tag -y --add best --add v2 6 >/dev/null
"$GUILD" comment -y --add "Looks good" --user ana 7 >/dev/null
"$GUILD" mark -y 6 >/dev/null
"$GUILD" label -y --set "tuned lr" 7 >/dev/null

"$GUILD" runs --all
rm -rf "$out"
mkdir -p "$out"
cp -a "$GUILD_HOME/runs" "$out/runs"
# The environment Guild records holds this machine's variables: left out,
# as in the runs of tests/data/guild-0.9/runs.
rm -f "$out"/runs/*/.guild/attrs/env
