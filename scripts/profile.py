#!/usr/bin/env python3
"""Where mxmedia's time goes under the benchmark loads: perf profiles.

    python3 scripts/profile.py [--seconds 10] [--out target/profile]

Starts the same deployment as `scripts/load_bench.py` (release mxmedia on
the embedded default, tokens checked against the benchmark's Synapse), runs
each download and upload load with wrk while `perf record -g` samples the
mxmedia process, and writes per load: `perf report` by symbol (self time and
with children) and, when `inferno-collapse-perf` and `inferno-flamegraph`
are on the PATH (`cargo install inferno`), a flame graph SVG. Needs perf
and wrk; perf needs `kernel.perf_event_paranoid` <= 1 or root.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load_bench as lb  # noqa: E402


# perf's call-graph options: DWARF unwinding needs the line tables of the
# profiling build; another binary gets a flat profile.
CALL_GRAPH = ["-g", "--call-graph", "dwarf,16384"]


def record(pid, seconds, out, name, load):
    """Runs `load` while perf samples `pid`; writes the reports for `name`."""
    data = os.path.join(out, f"{name}.perf.data")
    perf = subprocess.Popen(
        ["perf", "record", "-F", "499"] + CALL_GRAPH + ["-p", str(pid), "-o", data, "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    result = load()
    perf.wait()
    for mode, extra in (("self", ["--no-children"]), ("children", ["--children"])):
        with open(os.path.join(out, f"{name}.{mode}.txt"), "w") as f:
            subprocess.run(
                ["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.5", "--sort", "symbol", "-g", "none"] + extra,
                stdout=f,
                stderr=subprocess.DEVNULL,
            )
    if shutil.which("inferno-collapse-perf") and shutil.which("inferno-flamegraph"):
        script = subprocess.run(["perf", "script", "-i", data], capture_output=True).stdout
        folded = subprocess.run(["inferno-collapse-perf"], input=script, capture_output=True).stdout
        with open(os.path.join(out, f"{name}.svg"), "wb") as f:
            f.write(subprocess.run(["inferno-flamegraph"], input=folded, capture_output=True).stdout)
    os.remove(data)
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(lb.ROOT, "target", "profile"))
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--binary", help="profile this mxmedia binary instead (flat profile, no build)")
    args = parser.parse_args()
    global CALL_GRAPH
    os.makedirs(args.out, exist_ok=True)
    # A release build with line tables, so perf can unwind through DWARF; a
    # target directory of its own, so the benchmark's build stays as shipped.
    target = os.path.join(lb.ROOT, "target", "profiling")
    binary = os.path.join(target, "release", "mxmedia")
    if args.binary:
        binary, CALL_GRAPH = os.path.abspath(args.binary), []
    elif not args.no_build:
        env = dict(os.environ, CARGO_PROFILE_RELEASE_DEBUG="line-tables-only", CARGO_TARGET_DIR=target)
        subprocess.run(["cargo", "build", "--release", "--features", "turbojpeg", "--bin", "mxmedia"], cwd=lb.ROOT, check=True, env=env)
    py = lb.python()
    work = tempfile.mkdtemp(prefix="profile-")
    synapse, hs_port = lb.start_synapse(py, work)
    mxmedia = None
    try:
        token = lb.register(hs_port)
        mxmedia, port = lb.start_mxmedia(work, hs_port, binary)
        time.sleep(1)
        s = args.seconds
        one = lb.upload(port, token, os.urandom(64 * 1024))
        script = lb.GET_ONE_LUA.replace("@PATH@", f"/_matrix/client/v1/media/download/{one}")
        rps = record(mxmedia.pid, s, args.out, "download-64k", lambda: lb.wrk(port, token, script, s, 64, work, "d", mxmedia.pid)[0])
        print(f"download one 64 KiB file, c64: {rps:.0f} req/s {lb.cpu_note()}", flush=True)
        paths = ",".join(f'"/_matrix/client/v1/media/download/{lb.upload(port, token, os.urandom(4096))}"' for _ in range(1000))
        script = lb.GET_MANY_LUA.replace("@PATHS@", paths)
        rps = record(mxmedia.pid, s, args.out, "download-many-4k", lambda: lb.wrk(port, token, script, s, 64, work, "m", mxmedia.pid)[0])
        print(f"1,000 distinct 4 KiB files, c64: {rps:.0f} req/s {lb.cpu_note()}", flush=True)
        rps = record(mxmedia.pid, s, args.out, "upload-64k", lambda: lb.wrk(port, token, lb.UPLOAD_LUA, s, 16, work, "u", mxmedia.pid)[0])
        print(f"upload 64 KiB, c16: {rps:.0f} req/s {lb.cpu_note()}", flush=True)
    finally:
        for proc in (mxmedia, synapse):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    print(f"reports in {args.out}")


if __name__ == "__main__":
    main()
