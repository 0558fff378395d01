#!/usr/bin/env python3
"""Thumbnail benchmark: mxmedia's pipeline next to Synapse's own Pillow code
path and libvips (in-process), on the same generated inputs, single core
(taskset -c 1), median of 5 timed runs after a warm-up, one case per fresh
process so peak RSS is the case's own. Writes docs/benchmarks.md.

Needs: the Rust toolchain with cmake and nasm (the turbojpeg feature),
libde265-dev and libdav1d-dev (the heif feature); python3; Pillow and
pyvips (installed into .bench-venv by this script); Debian's libvips42 and
heif-enc (apt-get install libvips42 libheif-examples cmake nasm
libde265-dev libdav1d-dev).
Run from the repository root: python3 scripts/thumb_bench.py
"""
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".bench-venv")
SIZES5 = [(32, 32, "crop"), (96, 96, "crop"), (320, 240, "scale"), (640, 480, "scale"), (800, 600, "scale")]
CASES = [
    ("photo12mp.jpg", "scale320"), ("photo12mp.jpg", "crop96"), ("photo12mp.jpg", "all5"),
    ("photo12mp_prog.jpg", "scale320"), ("photo12mp.webp", "scale320"), ("photo12mp.webp", "crop96"),
    ("photo12mp_lossless.webp", "scale320"),
    ("alpha2mp.png", "scale320"), ("alpha2mp.png", "crop96"), ("anim50.gif", "scale320"), ("anim50.gif", "anim"),
    ("anim50.webp", "scale320"), ("anim50.webp", "crop96"), ("anim50.webp", "anim"),
    ("sticker24.webp", "crop96"), ("sticker24.webp", "anim"),
    ("photo12mp.heic", "scale320"), ("photo12mp.heic", "crop96"), ("photo12mp.heic", "all5"),
    ("photo12mp.avif", "scale320"), ("photo12mp.avif", "crop96"),
]
# Synapse thumbnails JPEG, PNG, GIF and WebP only (its thumbnail_requirements).
NOT_IN_SYNAPSE = (".heic", ".avif")


def specs(op):
    return {"scale320": [(320, 240, "scale")], "crop96": [(96, 96, "crop")], "all5": SIZES5,
            "anim": [(320, 180, "scale")]}[op]


# --- Synapse's thumbnailer, as its code behaves (Pillow, full decode, LANCZOS) ---
def pil_synapse(data, op):
    from PIL import Image, ImageOps, ImageSequence
    Image.MAX_IMAGE_PIXELS = 32 * 1024 * 1024
    image = Image.open(io.BytesIO(data))
    fmt = image.format
    if op == "anim":
        frames = []
        for frame in ImageSequence.Iterator(image):
            frames.append(frame.convert("RGBA").resize((320, 180), Image.LANCZOS))
        out = io.BytesIO()
        # An animation stays in its own format: GIF as GIF, WebP as WebP.
        anim_fmt = "WEBP" if fmt == "WEBP" else "GIF"
        frames[0].save(out, anim_fmt, save_all=True, append_images=frames[1:], loop=0)
        return out.getbuffer().nbytes
    image = ImageOps.exif_transpose(image)
    if image.mode in ("1", "L", "P"):
        image = image.convert("RGBA" if image.info.get("transparency") is not None else "RGB")
    # JPEG and WebP sources give JPEG thumbnails, PNG and GIF sources PNG ones.
    out_fmt = "JPEG" if fmt in ("JPEG", "WEBP") else "PNG"
    total = 0
    for (w, h, method) in specs(op):
        if method == "scale":
            if w * image.height < h * image.width:
                size = (w, max(1, w * image.height // image.width))
            else:
                size = (max(1, h * image.width // image.height), h)
            thumb = image.resize(size, Image.LANCZOS)
        else:
            ratio = max(w / image.width, h / image.height)
            scaled = (max(1, round(image.width * ratio)), max(1, round(image.height * ratio)))
            big = image.resize(scaled, Image.LANCZOS)
            left, top = (scaled[0] - w) // 2, (scaled[1] - h) // 2
            thumb = big.crop((left, top, left + w, top + h))
        out = io.BytesIO()
        if out_fmt == "JPEG":
            thumb.convert("RGB").save(out, "JPEG", quality=80)
        else:
            thumb.save(out, "PNG")
        total += out.getbuffer().nbytes
    return total


# --- libvips thumbnail_buffer, in-process ---
def vips(data, op):
    import pyvips
    pyvips.cache_set_max(0)
    if op == "anim":
        suffix = ".webp" if data[8:12] == b"WEBP" else ".gif"
        return len(pyvips.Image.thumbnail_buffer(data, 320, height=180, option_string="n=-1").write_to_buffer(suffix))
    total = 0
    for (w, h, method) in specs(op):
        kwargs = {"height": h}
        if method == "crop":
            kwargs["crop"] = "centre"
        thumb = pyvips.Image.thumbnail_buffer(data, w, **kwargs)
        suffix = ".png" if thumb.hasalpha() else ".jpg[Q=80]"
        total += len(thumb.write_to_buffer(suffix))
    return total


def run_tool(tool, path, op):
    data = open(path, "rb").read()
    fn = {"pil-synapse": pil_synapse, "vips": vips}[tool]
    times = []
    for _ in range(6):
        start = time.perf_counter()
        out = fn(data, op)
        times.append((time.perf_counter() - start) * 1000)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"median_ms": round(statistics.median(times[1:]), 2), "peak_rss_mb": round(peak, 1), "out_bytes": out}))


def measure(cmd, env=None):
    result = subprocess.run(["taskset", "-c", "1"] + cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        return {"error": (result.stderr or result.stdout).strip().splitlines()[-1][:120]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--tool":
        return run_tool(sys.argv[2], sys.argv[3], sys.argv[4])
    python = os.path.join(VENV, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "pillow==13.0.0", "pyvips"], check=True)
    # The release build's JPEG path: libjpeg-turbo (needs cmake and nasm),
    # and HEIC/AVIF through libheif (the heif feature).
    subprocess.run(["cargo", "build", "--release", "--features", "turbojpeg,heif", "--example", "thumb_compare"],
                   cwd=ROOT, check=True)
    binary = os.path.join(ROOT, "target", "release", "examples", "thumb_compare")
    inputs = tempfile.mkdtemp(prefix="thumb-inputs-")
    subprocess.run([binary, "gen", inputs], check=True)
    # HEIC (x265) and AVIF (aom) of the same 12 MP photo, at heif-enc's
    # quality 50, as phones and browsers write them.
    photo = os.path.join(inputs, "photo12mp.jpg")
    subprocess.run(["heif-enc", "-q", "50", "-o", os.path.join(inputs, "photo12mp.heic"), photo], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["heif-enc", "-A", "-q", "50", "-o", os.path.join(inputs, "photo12mp.avif"), photo], check=True,
                   stdout=subprocess.DEVNULL)
    env = dict(os.environ, VIPS_CONCURRENCY="1", OMP_NUM_THREADS="1")
    rows = []
    for name, op in CASES:
        path = os.path.join(inputs, name)
        row = {"case": f"{name} {op}", "bytes": os.path.getsize(path)}
        row["mxmedia"] = measure([binary, "run", path, op])
        if name.endswith(NOT_IN_SYNAPSE):
            row["pillow"] = {"skipped": "Synapse does not thumbnail it"}
        else:
            row["pillow"] = measure([python, os.path.abspath(__file__), "--tool", "pil-synapse", path, op], env)
        row["vips"] = measure([python, os.path.abspath(__file__), "--tool", "vips", path, op], env)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_table(rows)


def cell(result, key):
    if key in result:
        return f"{result[key]:.1f}"
    return "-" if "skipped" in result else "error"


def ratio(other, ours):
    if "median_ms" in other and "median_ms" in ours and ours["median_ms"] > 0:
        return f"{other['median_ms'] / ours['median_ms']:.1f}x"
    return "-"


def write_table(rows):
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"Measured by `python3 scripts/thumb_bench.py` on {time.strftime('%Y-%m-%d')}, {cpu}, one core (`taskset -c 1`),",
        "median of 5 timed runs after a warm-up, each case in a fresh process (peak RSS is the case's own,",
        "runtime included: Python with Pillow or pyvips imported, or the Rust binary holding its input).",
        "mxmedia is built with `--features turbojpeg` (libjpeg-turbo for JPEG decode and encode).",
        "Inputs are generated (`benches/support/inputs.rs`): 12 MP photo-like JPEG q90 (baseline and progressive),",
        "12 MP WebP (lossy q80 from libwebp, and lossless), 2 MP RGBA PNG, 50-frame 480x270 GIF,",
        "the same 50 frames as a lossy animated WebP fading in from black over four frames (a still shows a later",
        "frame in mxmedia; libvips and Pillow take the first), a 512x512 24-frame lossless animated sticker with",
        "transparency, and the 12 MP photo as HEIC (x265) and AVIF (aom) by `heif-enc -q 50`.",
        "`anim` keeps the animation (GIF stays GIF, WebP stays WebP).",
        "Synapse does not thumbnail HEIC or AVIF (`-`); mxmedia does when built with `--features heif`.",
        "`Pillow (Synapse)` is Synapse's thumbnailer logic: full decode, LANCZOS, JPEG q80 or PNG.",
        "`libvips` is `thumbnail_buffer` in-process (pyvips, Debian libvips 8.14, VIPS_CONCURRENCY=1).",
        "Ratios are their time divided by mxmedia's (higher = mxmedia faster).",
        "",
        "| case | mxmedia ms | Pillow (Synapse) ms | libvips ms | vs Pillow | vs libvips | peak RSS MB mxmedia / Pillow / libvips |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        m, p, v = r["mxmedia"], r["pillow"], r["vips"]
        lines.append(
            f"| {r['case']} | {cell(m, 'median_ms')} | {cell(p, 'median_ms')} | {cell(v, 'median_ms')} | "
            f"{ratio(p, m)} | {ratio(v, m)} | {cell(m, 'peak_rss_mb')} / {cell(p, 'peak_rss_mb')} / {cell(v, 'peak_rss_mb')} |"
        )
    benchdoc.replace_section("thumb_bench", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
