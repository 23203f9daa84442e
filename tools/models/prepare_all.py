#!/usr/bin/env python3
"""Prepare every test model and its onnxruntime reference data in one cache directory.

Usage:
    python3 tools/models/prepare_all.py CACHEDIR [--force]

Runs tools/zoo/generate.py into CACHEDIR/zoo/, tools/models/fetch_real.py (CACHEDIR/wheels,
CACHEDIR/real/) and tools/models/reference.py for each model into CACHEDIR/refs/<model stem>/,
all with the Python running this script. Work already done is skipped: zoo models are rebuilt
only when the generator is newer than them, references only when their model, reference.py or
arguments changed. Prints one line per model.
"""
import json
import os
import subprocess
import sys

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATE = os.path.join(TOOLS, "zoo", "generate.py")
FETCH = os.path.join(TOOLS, "models", "fetch_real.py")
REFERENCE = os.path.join(TOOLS, "models", "reference.py")

# model path (relative to CACHEDIR) -> extra reference.py arguments
MODELS = {
    "zoo/mlp.onnx": ["--shape", "x=2x64"],
    "zoo/resnet_style.onnx": [],
    "zoo/mobilenetv2_style.onnx": [],
    "zoo/transformer_encoder.onnx": ["--int-high", "100"],
    # images in [0, 1), as YOLOv8 preprocessing produces
    "real/yolov8n_320.onnx": ["--shape", "images=1x3x320x320", "--float-low", "0"],
    # PaddleOCR inputs are normalized to [-1, 1); det needs H, W multiples of 32
    "real/ppocrv4_det.onnx": ["--shape", "x=1x3x320x320"],
    "real/ppocrv4_rec.onnx": ["--shape", "x=1x3x48x320"],
    "real/ppocr_cls.onnx": ["--shape", "x=1x3x48x192"],
}
SEED = 0


def mtime(path):
    return os.path.getmtime(path) if os.path.exists(path) else -1.0


def run(*args):
    subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL)


def main():
    args = [a for a in sys.argv[1:] if a != "--force"]
    if len(args) != 1:
        sys.exit(__doc__)
    cache, force = os.path.abspath(args[0]), "--force" in sys.argv[1:]

    zoo = [os.path.join(cache, m) for m in MODELS if m.startswith("zoo/")]
    if force or min(map(mtime, zoo)) < mtime(GENERATE):
        run(GENERATE, os.path.join(cache, "zoo"))
    run(FETCH, cache)

    for rel, extra in MODELS.items():
        model = os.path.join(cache, rel)
        stem = os.path.splitext(os.path.basename(rel))[0]
        out = os.path.join(cache, "refs", stem)
        ref_args = [model, out, "--seed", str(SEED), *extra]
        stamp, manifest = os.path.join(out, ".args.json"), os.path.join(out, "manifest.json")
        fresh = (not force and mtime(manifest) >= max(mtime(model), mtime(REFERENCE))
                 and os.path.exists(stamp) and json.load(open(stamp)) == ref_args)
        if not fresh:
            run(REFERENCE, *ref_args)
            with open(stamp, "w") as f:
                json.dump(ref_args, f)
        with open(manifest) as f:
            m = json.load(f)
        sig = ", ".join(f"{t['name']}{t['shape']}" for t in m["inputs"]) + " -> " + \
            ", ".join(f"{t['name']}{t['shape']}" for t in m["outputs"])
        print(f"{stem:22s} {'cached' if fresh else 'ok    '} {sig}")


if __name__ == "__main__":
    main()
