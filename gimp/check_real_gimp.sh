#!/usr/bin/env bash
# Check the DRCN GIMP plug-in in a real GIMP 3 (run as root on a Debian/Ubuntu host).
#
#   gimp/check_real_gimp.sh [CHROOT]      (or DRCN_GIMP_CHROOT; default /work/scratch-gimp/chroot)
#
# Installs GIMP 3 into a Debian 13 chroot when missing (debootstrap), bind-mounts this repository
# and its virtual environment at the same paths so the venv's Python runs the worker, installs the
# plug-in with `drcn gimp install --gimp-dir`, runs the filter headless on 8-bit RGB, RGBA,
# 16-bit grey, float and a two-layer image (offset layer in a group), on linear float and 16-bit
# images and 8-bit ones with an Adobe RGB or linear sRGB profile (precision and profile kept),
# checks sizes, offsets and pixels against `drcn upscale` / the engine (<= 1 LSB), checks the
# error messages for a broken or missing worker, kills the plug-in mid-run (what GIMP does on
# Cancel) and checks the worker stops, runs hostile cases (selection, indexed, masks, text and
# pasted layers, too big, twice in a row),
# and under Xvfb checks that one Ctrl+Z undoes Scale this image, screenshots the dialog into
# docs/gimp-dialog.png and presses its OK.
set -euo pipefail

CHROOT=$(realpath -m "${1:-${DRCN_GIMP_CHROOT:-/work/scratch-gimp/chroot}}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${DRCN_VENV:-$REPO/.venv}
PY=$VENV/bin/python
WORK=/tmp/drcn-gimp-check               # as GIMP sees it, inside the chroot
HOSTWORK=$CHROOT$WORK
SCREENSHOT=${DRCN_SCREENSHOT:-$REPO/docs/gimp-dialog.png}
PACKAGES="gimp python3-gi gir1.2-gimp-3.0 xvfb xauth x11-utils xdotool imagemagick"
MOUNTED=()
STARTED=()
CREATED=""

say() { printf '== %s\n' "$*"; }

# A clean environment, so no host Python leaks in: env -i "${CLEAN[@]}" [VAR=value ...] chroot ...
CLEAN=(HOME=/root PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

in_chroot() {  # in_chroot [VAR=value ...] command ...  (foreground only: a function backgrounded
  local vars=()  # with & runs in a subshell whose $! is not the command's)
  while [[ $# -gt 0 && $1 == *=* ]]; do vars+=("$1"); shift; done
  env -i "${CLEAN[@]}" "${vars[@]}" chroot "$CHROOT" "$@"
}

descendant() {  # descendant PID PATTERN: a process under PID whose command line has PATTERN
  local p found
  for p in $(pgrep -P "$1" || true); do
    if grep -qa -- "$2" "/proc/$p/cmdline" 2>/dev/null; then echo "$p"; return 0; fi
    if found=$(descendant "$p" "$2"); then echo "$found"; return 0; fi
  done
  return 1
}

running() {  # running PID: alive and not a zombie waiting for init to reap it
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [[ $state != Z ]]
}

cleanup() {  # stop what this script started, let it exit, then unmount what it mounted
  local pid i
  for pid in "${STARTED[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${STARTED[@]}"; do
    for i in $(seq 100); do running "$pid" || break; sleep 0.1; done
  done
  sleep 1   # their plug-ins exit after them
  for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTED[i]}" 2>/dev/null || umount --lazy "${MOUNTED[i]}" || true
  done
  [[ -z $CREATED ]] || find "$CREATED" -depth -type d -empty -delete 2>/dev/null || true
}
trap cleanup EXIT

bind() {  # bind SOURCE [AT]: mount SOURCE at AT (default: the same path) in the chroot, once
  local target=$CHROOT${2:-$1}
  mkdir -p "$target"
  if ! mountpoint -q "$target"; then
    mount --bind "$1" "$target"
    MOUNTED+=("$target")
  fi
}

if [[ ! -x $CHROOT/usr/bin/gimp-console-3.0 || ! -x $CHROOT/usr/bin/xdotool ]]; then
  say "installing GIMP 3 into a Debian 13 chroot at $CHROOT"
  command -v debootstrap >/dev/null || apt-get install -y debootstrap
  [[ -x $CHROOT/usr/bin/apt-get ]] || debootstrap --variant=minbase trixie "$CHROOT" http://deb.debian.org/debian
  cp /etc/resolv.conf "$CHROOT/etc/resolv.conf"
  bind /proc
  bind /dev
  in_chroot DEBIAN_FRONTEND=noninteractive apt-get update
  in_chroot DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $PACKAGES
fi
bind /proc
bind /dev
bind "$REPO"
# The checkout the venv imports drcn_plugin from (an editable install names one). When that is
# another checkout, this one is mounted in its place inside the chroot, where the worker runs
# with GIMP's environment, and put first on the path here: every step runs this repository's code.
# An installed (not editable) drcn-plugin in the venv is what runs everywhere.
CODE=$(env -u PYTHONPATH "$PY" -c \
  'import drcn_plugin, pathlib; print(pathlib.Path(drcn_plugin.__file__).resolve().parent.parent)')
if [[ $CODE != "$REPO" && $CODE != "$VENV"/* ]]; then
  export PYTHONPATH=$REPO
  if [[ $VENV == "$CODE"/* ]]; then  # the venv's mount point, made in this checkout through it
    rel=${VENV#"$CODE"/}
    [[ -e $REPO/${rel%%/*} ]] || CREATED=$REPO/${rel%%/*}
  fi
  bind "$REPO" "$CODE"
fi
[[ $VENV == "$REPO"/* ]] || bind "$VENV"
bind "$("$PY" -c 'import sys; print(sys.base_prefix)')"   # the Python the venv links to
say "$(in_chroot gimp-console-3.0 --version)"
ran=$(in_chroot "$PY" -c 'import drcn_plugin; print(drcn_plugin.__file__)')
if [[ $CHROOT$ran -ef $REPO/drcn_plugin/__init__.py ]]; then
  say "the worker imports $ran (this checkout's code)"
else
  say "the worker imports $ran (an installed drcn-plugin, not this checkout's code)"
fi

say "installing the plug-in"
"$VENV/bin/drcn" gimp install --gimp-dir "$CHROOT/root/.config/GIMP/3.0"

rm -rf "$HOSTWORK" && mkdir -p "$HOSTWORK"
cp "$REPO/gimp/real_gimp_batch.py" "$HOSTWORK/"
"$PY" "$REPO/gimp/real_gimp_compare.py" make "$CHROOT" "$WORK"

gimp_batch() {  # gimp_batch JOBS [VAR=value ...]: run the jobs file in headless GIMP
  local jobs=$1; shift
  in_chroot "$@" timeout 600 gimp-console-3.0 -i --quit --batch-interpreter python-fu-eval \
    -b "WORK='$WORK'; JOBS='$jobs'; exec(open(WORK + '/real_gimp_batch.py').read())" \
    >"$HOSTWORK/$jobs.log" 2>&1 || say "gimp-console exited with $? (log: $HOSTWORK/$jobs.log)"
}

say "running the filter headless in GIMP"
gimp_batch jobs.json
gimp_batch jobs-hostile.json
gimp_batch jobs-broken.json DRCN_WORKER_PYTHON=/usr/bin/python3
gimp_batch jobs-missing.json DRCN_WORKER_PYTHON=/nonexistent/bin/python3
say "comparing with drcn upscale / the engine"
status=0
"$PY" "$REPO/gimp/real_gimp_compare.py" check "$CHROOT" "$WORK" || status=1

say "cancel: kill the plug-in mid-run, as GIMP does when its progress is cancelled"
env -i "${CLEAN[@]}" chroot "$CHROOT" gimp-console-3.0 -i --quit --batch-interpreter python-fu-eval \
  -b "WORK='$WORK'; JOBS='jobs-cancel.json'; exec(open(WORK + '/real_gimp_batch.py').read())" \
  >"$HOSTWORK/jobs-cancel.json.log" 2>&1 &
gimp=$!
STARTED+=("$gimp")
plugin="" worker=""
for _ in $(seq 120); do
  sleep 0.5
  plugin=$(descendant "$gimp" drcn-super-resolution.py || true)
  [[ -n $plugin ]] && worker=$(descendant "$plugin" drcn_plugin.integrations.gimp_worker || true)
  [[ -n $worker ]] && break
done
if [[ -z $worker ]]; then
  echo "cancel: the worker never started  FAIL"; status=1
else
  sleep 8   # let it load the model and run some tiles
  kill -KILL "$plugin"
  gone=""
  for i in $(seq 250); do
    if ! running "$worker"; then gone=$i; break; fi
    sleep 0.02
  done
  if [[ -n $gone ]]; then
    echo "cancel: plug-in $plugin killed; worker $worker exited within $((gone * 20)) ms  PASS"
  else
    echo "cancel: worker $worker still running 5 s after the plug-in was killed  FAIL"; status=1
    kill -KILL "$worker"
  fi
fi
for _ in $(seq 60); do kill -0 "$gimp" 2>/dev/null || break; sleep 1; done

say "GIMP under Xvfb: one Ctrl+Z after Scale this image; the dialog's screenshot, then its OK"
env -i "${CLEAN[@]}" chroot "$CHROOT" Xvfb :99 -screen 0 1280x1024x24 -nolisten tcp \
  >"$HOSTWORK/xvfb.log" 2>&1 &
STARTED+=("$!")
sleep 2
env -i "${CLEAN[@]}" DISPLAY=:99 chroot "$CHROOT" gimp-3.0 --no-splash --batch-interpreter python-fu-eval \
  -b "WORK='$WORK'; JOBS='jobs-dialog.json'; exec(open(WORK + '/real_gimp_batch.py').read())" \
  >"$HOSTWORK/gimp-gui.log" 2>&1 &
STARTED+=("$!")
for _ in $(seq 180); do [[ -f $HOSTWORK/undo-ran ]] && break; sleep 1; done
if [[ -f $HOSTWORK/undo-ran ]]; then
  image=$(in_chroot DISPLAY=:99 xdotool search --name rgb | head -1 || true)
  [[ -z $image ]] \
    || in_chroot DISPLAY=:99 timeout 20 xdotool windowfocus --sync "$image" key ctrl+z || true
fi
touch "$HOSTWORK/undo-done"
for _ in $(seq 30); do grep -qs '"undo"' "$HOSTWORK/jobs-dialog.json.out" && break; sleep 1; done
"$PY" "$REPO/gimp/real_gimp_compare.py" undo "$CHROOT" "$WORK" || status=1
window=""
for _ in $(seq 180); do
  sleep 1
  window=$(in_chroot DISPLAY=:99 xwininfo -root -tree 2>/dev/null \
           | awk '/"DRCN Super-Resolution"/ {print $1; exit}')
  [[ -n $window ]] && break
done
if [[ -z $window ]]; then
  echo "dialog: no 'DRCN Super-Resolution' window appeared  FAIL"; status=1
else
  sleep 2   # let it draw
  in_chroot DISPLAY=:99 import -window "$window" "$WORK/dialog.png"
  mkdir -p "$(dirname "$SCREENSHOT")"
  "$PY" -c "import sys; from PIL import Image; im = Image.open(sys.argv[1]).convert('RGB'); \
im.quantize(64).save(sys.argv[2], optimize=True); print('dialog: window %s, %dx%d, saved %s' \
% (sys.argv[3], im.width, im.height, sys.argv[2]))" "$HOSTWORK/dialog.png" "$SCREENSHOT" "$window"
  in_chroot DISPLAY=:99 timeout 20 xdotool windowfocus --sync "$window" key Return || true  # OK
  for _ in $(seq 120); do
    grep -qs '"dialog"' "$HOSTWORK/jobs-dialog.json.out" && break; sleep 1
  done
  "$PY" "$REPO/gimp/real_gimp_compare.py" dialog "$CHROOT" "$WORK" || status=1
fi

[[ $status == 0 ]] && say "ALL CHECKS PASSED" || say "SOME CHECKS FAILED"
exit $status
