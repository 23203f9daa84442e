#!/usr/bin/env bash
# Fetches the ONNX backend node tests (1765 tests, the last wheel that ships them is
# onnx==1.22.0) into CACHE/onnx-1.22.0/onnx/backend/test/data/node. Idempotent.
set -euo pipefail
CACHE="${1:-$(dirname "$0")/../target/cache}"
DEST="$CACHE/onnx-1.22.0"
if [ -d "$DEST/onnx/backend/test/data/node/test_abs" ]; then
    exit 0
fi
PY="$CACHE/venv/bin/python"
[ -x "$PY" ] || PY=python3
echo "== fetching ONNX node tests (onnx==1.22.0 wheel)"
mkdir -p "$CACHE/wheels"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: onnx==1.22.0 -d "$CACHE/wheels"
"$PY" - "$CACHE/wheels" "$DEST" <<'PYEOF'
import glob, sys, zipfile
wheel = sorted(glob.glob(sys.argv[1] + "/onnx-1.22.0-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith("onnx/backend/test/data/node/")]
    z.extractall(sys.argv[2], members)
print(f"   {len(members)} files")
PYEOF
