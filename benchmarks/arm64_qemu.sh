#!/usr/bin/env bash
# ARM64 correctness without a Pi: run an export under user-mode QEMU with the aarch64 onnxruntime
# wheel and compare its logits with the x86 run (benchmarks/arm64_qemu.py does the running/comparing).
#
#   benchmarks/arm64_qemu.sh EXPORT_DIR [--cpu cortex-a76|cortex-a72] [--root DIR] [--out DIR] [-- compare args]
#
#   --cpu   cortex-a76 (Raspberry Pi 5, dotprod; default) or cortex-a72 (Raspberry Pi 4, no dotprod)
#   --root  the arm64 Debian root, built once and reused (default ~/.cache/ternarylm/arm64-bookworm)
#   --out   where x86.npz / arm64-<cpu>.npz / compare.json go (default ./arm64-qemu)
#
# First run (about 2 minutes, needs root for apt-get and the Debian and PyPI registries):
#   apt-get install qemu-user-static debootstrap
#   debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm ROOT
#   unpack every fetched .deb with dpkg-deb --fsys-tarfile | tar -x --keep-directory-symlink
#     (plain dpkg -x breaks the merged-/usr /lib symlinks)
#   pip install --target ROOT/opt/site --platform manylinux_2_28_aarch64 --only-binary=:all: numpy onnxruntime
# Traps handled here: QEMU passes the host's x86 /proc/cpuinfo through and ORT's CPU detection
# segfaults on it, so ROOT/proc is made a real directory holding an ARM cpuinfo for the chosen core
# (QEMU's -L prefix makes the emulated process see ROOT/proc/cpuinfo as /proc/cpuinfo).
# Timings under emulation are not device figures: this checks correctness (and ORT's slow-path log).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -ge 1 ] || usage
MODEL=""
CPU=cortex-a76
ROOT=${ARM64_ROOT:-$HOME/.cache/ternarylm/arm64-bookworm}
OUT=arm64-qemu
COMPARE_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) CPU=$2; shift 2 ;;
    --root) ROOT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) usage ;;
    --) shift; COMPARE_ARGS=("$@"); break ;;
    -*) echo "arm64_qemu.sh: unknown option $1" >&2; exit 2 ;;
    *) MODEL=$1; shift ;;
  esac
done
[ -n "$MODEL" ] && [ -f "$MODEL/model.onnx" ] || { echo "arm64_qemu.sh: $MODEL has no model.onnx" >&2; exit 2; }
case "$CPU" in cortex-a76|cortex-a72) ;; *) echo "arm64_qemu.sh: --cpu must be cortex-a76 or cortex-a72" >&2; exit 2 ;; esac
MODEL=$(cd "$MODEL" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
DRIVER=$HERE/arm64_qemu.py
REPO=$(cd "$HERE/.." && pwd)  # ternarylm.onnxrt and ternarylm.format are imported from the source tree
PY=${PYTHON:-python3}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { echo "[arm64_qemu] $*" >&2; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

# 1. Tools.
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null; then
  log "installing qemu-user-static and debootstrap"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq qemu-user-static debootstrap >/dev/null
fi

# 2. An arm64 Debian root with python3.11 (first stage only: nothing is executed inside it).
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
  log "debootstrap arm64 bookworm into $ROOT"
  mkdir -p "$ROOT"
  $SUDO debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm "$ROOT" \
    http://deb.debian.org/debian >/dev/null
  log "unpacking $(ls "$ROOT"/var/cache/apt/archives/*.deb | wc -l) packages"
  for deb in "$ROOT"/var/cache/apt/archives/*.deb; do
    dpkg-deb --fsys-tarfile "$deb" | $SUDO tar -x --keep-directory-symlink -C "$ROOT"
  done
fi

# 3. aarch64 wheels (numpy, onnxruntime and their pure-Python needs) into ROOT/opt/site.
if [ ! -d "$ROOT/opt/site/onnxruntime" ]; then
  log "fetching aarch64 wheels"
  $SUDO "$PY" -m pip install -q --target "$ROOT/opt/site" --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --only-binary=:all: \
    --python-version 3.11 --implementation cp numpy onnxruntime
fi

# 4. A real ROOT/proc with an ARM cpuinfo for the chosen core (the x86 one crashes ORT's cpuinfo).
if [ -L "$ROOT/proc" ] || [ ! -d "$ROOT/proc" ]; then $SUDO rm -f "$ROOT/proc"; $SUDO mkdir -p "$ROOT/proc"; fi
if [ "$CPU" = cortex-a76 ]; then
  PART=0xd0b; FEATURES="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
else
  PART=0xd08; FEATURES="fp asimd evtstrm crc32 cpuid"
fi
{
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$i" "$FEATURES"
    printf 'CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: %s\nCPU revision\t: 1\n\n' "$PART"
  done
} | $SUDO tee "$ROOT/proc/cpuinfo" >/dev/null

# 5. The x86 run, the emulated arm64 run, the comparison.
log "x86-64 run"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$DRIVER" run "$MODEL" "$OUT/x86.npz" >/dev/null
log "arm64 run under qemu-aarch64 -cpu $CPU (slow: emulated)"
start=$(date +%s)
PYTHONPATH="$ROOT/opt/site:$REPO" PYTHONNOUSERSITE=1 \
  qemu-aarch64-static -cpu "$CPU" -L "$ROOT" "$ROOT/usr/bin/python3.11" "$DRIVER" run "$MODEL" "$OUT/arm64-$CPU.npz" \
  >/dev/null
log "arm64 run took $(( $(date +%s) - start )) s"
set +e
"$PY" "$DRIVER" compare "$OUT/x86.npz" "$OUT/arm64-$CPU.npz" "${COMPARE_ARGS[@]}" | tee "$OUT/compare-$CPU.json"
rc=${PIPESTATUS[0]}
set -e
[ $rc = 0 ] && log "PASS: arm64 ($CPU) logits match x86" || log "FAIL: arm64 ($CPU) logits differ beyond tolerance"
exit $rc
