#!/usr/bin/env bash
# Install Detectron2 into the interpreter given as $1, unless it can already import it
# (a user who built Detectron2 from source with CUDA keeps their build).
# PyPI carries upstream Detectron2 as `sal-detectron2` with a cp310 tag; its Python code is
# version-independent, so the wheel is fetched for 3.10 and re-tagged py3-none-any (file name
# and the WHEEL metadata, so that `pip check` accepts it).
# Its compiled detectron2/_C loads on no Python with the torch installed here: built for CPython
# 3.10, it needs CUDA 12's libcudart.so.12 (torch 2.14's PyPI wheels bring CUDA 13) and a torch of
# the pre-C++11 string ABI. Detectron2 then uses its pure-Python fallbacks (e.g. the official COCO
# evaluation); ltm_d2 never calls _C.
set -euo pipefail
PY=${1:-python}
if "$PY" -c "import detectron2" 2>/dev/null; then
    echo "detectron2 already importable: $("$PY" -c 'import detectron2; print(detectron2.__file__)')"
    exit 0
fi
VERSION=0.7.2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.10 \
    --platform any "sal-detectron2==$VERSION" -d "$TMP"
SRC=$(ls "$TMP"/sal_detectron2-*.whl)
WHEEL="$TMP/sal_detectron2-$VERSION-py3-none-any.whl"
"$PY" - "$SRC" "$WHEEL" <<'PYEOF'
import base64, hashlib, re, sys, zipfile

src, dst = sys.argv[1:3]
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
    wheel_name = next(n for n in zin.namelist() if n.endswith(".dist-info/WHEEL"))
    wheel = re.sub(r"(?m)^Tag: .*$", "Tag: py3-none-any", zin.read(wheel_name).decode())
    digest = base64.urlsafe_b64encode(hashlib.sha256(wheel.encode()).digest()).rstrip(b"=").decode()
    for item in zin.infolist():
        data = zin.read(item)
        if item.filename == wheel_name:
            data = wheel.encode()
        elif item.filename.endswith(".dist-info/RECORD"):
            data = re.sub(
                r"(?m)^(" + re.escape(wheel_name) + r"),[^,]*,\d*$",
                lambda m: f"{m.group(1)},sha256={digest},{len(wheel)}",
                data.decode(),
            ).encode()
        zout.writestr(item, data)
PYEOF
"$PY" -m pip install --quiet "$WHEEL" \
    "numpy<2" "opencv-python<4.12" "setuptools<81" fvcore iopath pycocotools matplotlib
