#!/usr/bin/env python3
# benches/compare.py: atomc against ONNX Runtime (and OpenVINO when importable) on the same
# models, thread counts, input shapes and timing policy, measured in the same run.
"""Compare `atomc bench` with ONNX Runtime (and OpenVINO, when it can be imported).

Usage (with the venv that has onnxruntime and numpy):
    target/cache/venv/bin/python benches/compare.py [MODEL.onnx ...] [--threads 1,2]
        [--atomc PATH] [--backend B] [--quick] [--json OUT] [--timeout S]
        [--warmup-ms MS] [--min-runs N] [--min-time-ms MS] [--rounds N]

Models default to every .onnx under target/cache/models/zoo and target/cache/models/real
(the cache root can be moved with ATOMC_MODELS). For each model and thread count, atomc
(`atomc bench MODEL --threads N --json`, its default backend unless --backend) and ONNX
Runtime (intra_op_num_threads=N, inter_op_num_threads=1, sequential execution, default
graph optimizations) run back to back on the same input shapes: symbolic dims are 1 except
for the models in SHAPES (those of tools/models/prepare_all.py). Both follow the same policy:
one first run, warm-up for --warmup-ms, then at least --min-runs runs and --min-time-ms in
total; the table shows medians. With --rounds N, atomc and the runtimes take turns N times
per row and the table shows the median of the N round medians (the JSON keeps each), so that
a burst of load on a shared machine hits one round of each rather than one side. OpenVINO (f32 inference precision, N threads) joins when
`import openvino` works. A failing atomc or runtime puts "error: <first line>" in its cell
and the script goes on.
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Model file stem prefix -> input shapes, as tools/models/prepare_all.py makes the references.
SHAPES = {
    "yolov8n": {"images": [1, 3, 320, 320]},
    "ppocrv4_det": {"x": [1, 3, 320, 320]},
    "ppocrv4_rec": {"x": [1, 3, 48, 320]},
    "ppocr_cls": {"x": [1, 3, 48, 192]},
}

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def default_atomc():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    return os.path.join(target, "release", "atomc")


def default_models():
    cache = os.environ.get("ATOMC_MODELS") or os.path.join(ROOT, "target", "cache", "models")
    found = []
    for sub in ("zoo", "real"):
        found += sorted(glob.glob(os.path.join(cache, sub, "*.onnx")))
    return found


def input_shapes(model, inputs):
    """name -> shape: the table's entry for the model, else the declared dims, symbolic as 1."""
    stem = os.path.splitext(os.path.basename(model))[0]
    table = next((s for prefix, s in SHAPES.items() if stem.startswith(prefix)), {})
    return {i.name: table.get(i.name) or [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
            for i in inputs}


def random_feed(inputs, shapes, seed=0):
    """Floats uniform in [-1, 1), integers in [0, 10), bools alternating (as atomc's)."""
    rng = np.random.default_rng(seed)
    feed = {}
    for i in inputs:
        dtype = ORT_DTYPES.get(i.type, np.float32)
        shape = shapes[i.name]
        if np.issubdtype(dtype, np.floating):
            feed[i.name] = rng.uniform(-1, 1, shape).astype(dtype)
        elif dtype == np.bool_:
            feed[i.name] = (np.arange(int(np.prod(shape))) % 2 == 0).reshape(shape)
        else:
            feed[i.name] = rng.integers(0, 10, shape).astype(dtype)
    return feed


def quantile(v, q):
    """Linear interpolation between ranks of sorted v (as atomc bench)."""
    pos = q * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def measure(run, policy):
    """The atomc bench policy for a callable: first run, warm-up, timed runs; times in ms."""
    t = time.perf_counter()
    run()
    first = (time.perf_counter() - t) * 1e3
    end = time.perf_counter() + policy["warmup_ms"] / 1e3
    while time.perf_counter() < end:
        run()
    times, total = [], 0.0
    while len(times) < policy["min_runs"] or total < policy["min_time_ms"] or not times:
        t = time.perf_counter()
        run()
        dt = (time.perf_counter() - t) * 1e3
        times.append(dt)
        total += dt
    times.sort()
    return {"first_run_ms": first, "median_ms": quantile(times, 0.5), "p10_ms": quantile(times, 0.1),
            "p90_ms": quantile(times, 0.9), "mean_ms": sum(times) / len(times), "min_ms": times[0],
            "runs": len(times)}


def first_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    line = lines[0] if lines else "no message"
    line = line[len("error: "):] if line.startswith("error: ") else line
    return "error: " + line.replace("|", "/")


def bench_atomc(args, model, threads, shapes, policy):
    cmd = [args.atomc, "bench", model, "--threads", str(threads), "--json",
           "--warmup-ms", str(policy["warmup_ms"]), "--min-runs", str(policy["min_runs"]),
           "--min-time-ms", str(policy["min_time_ms"])]
    if args.backend:
        cmd += ["--backend", args.backend]
    for name, shape in shapes.items():
        cmd += ["--shape", f"{name}={'x'.join(map(str, shape))}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"error: timed out after {args.timeout} s"}
    except OSError as e:
        return {"error": f"error: cannot start {args.atomc}: {e}"}
    if p.returncode != 0:
        return {"error": first_line(p.stderr or p.stdout)}
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"error": first_line("atomc bench printed no JSON: " + p.stdout)}


def bench_ort(model, threads, shapes, policy):
    try:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        t = time.perf_counter()
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
        compile_ms = (time.perf_counter() - t) * 1e3
        feed = random_feed(sess.get_inputs(), shapes)
        r = measure(lambda: sess.run(None, feed), policy)
        r["compile_ms"] = compile_ms
        return r
    except Exception as e:  # noqa: BLE001 -- any runtime failure becomes the row's cell
        return {"error": first_line(str(e))}


def bench_openvino(ov, model, threads, shapes, policy):
    try:
        core = ov.Core()
        t = time.perf_counter()
        m = core.read_model(model)
        m.reshape({name: shape for name, shape in shapes.items()})
        compiled = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                 "INFERENCE_NUM_THREADS": threads})
        compile_ms = (time.perf_counter() - t) * 1e3
        request = compiled.create_infer_request()
        ins = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()
        feed = random_feed(ins, shapes)
        r = measure(lambda: request.infer(feed), policy)
        r["compile_ms"] = compile_ms
        return r
    except Exception as e:  # noqa: BLE001
        return {"error": first_line(str(e))}


def combine(rounds):
    """One result from several rounds: the median of their medians, all runs counted."""
    failed = [r for r in rounds if "error" in r]
    if failed:
        return failed[0]
    out = dict(rounds[0])
    out["round_medians_ms"] = [r["median_ms"] for r in rounds]
    out["median_ms"] = quantile(sorted(out["round_medians_ms"]), 0.5)
    out["runs"] = sum(r["runs"] for r in rounds)
    return out


def cell(r, key, fmt="{:.3f}", error=None):
    if "error" in r:
        return error or r["error"]
    return fmt.format(r[key])


def ratio(a, b):
    if "error" in a or "error" in b or not b["median_ms"]:
        return "-"
    return f"{a['median_ms'] / b['median_ms']:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", help="ONNX files (default: the zoo and real models)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--atomc", default=default_atomc(), help="the atomc binary (default: target/release/atomc)")
    ap.add_argument("--backend", help="atomc backend (default: atomc's default)")
    ap.add_argument("--json", metavar="OUT", help="also write every row to OUT as JSON")
    ap.add_argument("--quick", action="store_true", help="smoke run: no warm-up, 3 runs, no minimum time")
    ap.add_argument("--warmup-ms", type=int, default=200)
    ap.add_argument("--min-runs", type=int, default=20)
    ap.add_argument("--min-time-ms", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=1, help="turns atomc and the runtimes take per row (default 1)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per atomc bench (default 600)")
    args = ap.parse_args()
    policy = {"warmup_ms": args.warmup_ms, "min_runs": args.min_runs, "min_time_ms": args.min_time_ms}
    if args.quick:
        policy = {"warmup_ms": 0, "min_runs": 3, "min_time_ms": 0}
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    models = args.models or default_models()
    if not models:
        sys.exit("no models: give paths, or run scripts/test.sh once to fill target/cache/models")
    try:
        import openvino as ov
    except ImportError:
        ov = None

    print(f"atomc: {args.atomc} (backend {args.backend or 'default'}); onnxruntime {ort.__version__}"
          + (f"; openvino {ov.__version__}" if ov else "; openvino not importable")
          + f"; policy: warm-up {policy['warmup_ms']} ms, >= {policy['min_runs']} runs, "
          f">= {policy['min_time_ms']} ms", file=sys.stderr)
    rows = []
    for model in models:
        try:
            inputs = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()
            shapes = input_shapes(model, inputs)
        except Exception as e:  # noqa: BLE001 -- ORT cannot read it: atomc still gets a try
            shapes = {}
            print(f"{model}: ORT cannot load it ({first_line(str(e))}); atomc runs with its default shapes",
                  file=sys.stderr)
        for n in threads:
            row = {"model": os.path.splitext(os.path.basename(model))[0], "path": model, "threads": n,
                   "shapes": shapes}
            turns = {"atomc": [], "ort": [], "openvino": []}
            for _ in range(max(1, args.rounds)):
                turns["atomc"].append(bench_atomc(args, model, n, shapes, policy))
                turns["ort"].append(bench_ort(model, n, shapes, policy))
                if ov:
                    turns["openvino"].append(bench_openvino(ov, model, n, shapes, policy))
            for side, results in turns.items():
                if results:
                    row[side] = combine(results)
            rows.append(row)
            print(f"{row['model']} x{n}: atomc {cell(row['atomc'], 'median_ms', '{:.3f} ms')}, "
                  f"ORT {cell(row['ort'], 'median_ms', '{:.3f} ms')}", file=sys.stderr)

    backends = sorted({r["atomc"]["backend"] for r in rows if "backend" in r["atomc"]})
    print(f"atomc backend {', '.join(backends) or args.backend or '?'}, onnxruntime {ort.__version__}"
          + (f", openvino {ov.__version__}" if ov else "")
          + f"; each: first run, warm-up {policy['warmup_ms']} ms, then >= {policy['min_runs']} runs and "
          f">= {policy['min_time_ms']} ms; "
          + (f"median of {args.rounds} round medians, in ms\n" if args.rounds > 1 else "medians in ms\n"))
    head = ["model", "threads", "atomc median ms", "ORT median ms", "atomc/ORT"]
    if ov:
        head += ["OpenVINO ms", "atomc/OV"]
    head += ["atomc compile ms", "atomc first run ms", "runs atomc/ORT"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        a, o = r["atomc"], r["ort"]
        cells = [r["model"], str(r["threads"]), cell(a, "median_ms"), cell(o, "median_ms"), ratio(a, o)]
        if ov:
            cells += [cell(r["openvino"], "median_ms"), ratio(a, r["openvino"])]
        runs = f"{a.get('runs', '-')}/{o.get('runs', '-')}"
        cells += [cell(a, "compile_ms", "{:.1f}", "-"), cell(a, "first_run_ms", error="-"), runs]
        print("| " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": policy, "onnxruntime": ort.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
