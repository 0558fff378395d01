#!/usr/bin/env python3
"""Side-by-side load benchmark: mxmedia against Synapse's own media repository.

One command, one run, one machine:

    python3 scripts/load_bench.py [--seconds 10]

It builds mxmedia (release, `--features turbojpeg`), makes the Synapse
virtualenv the end-to-end suite uses (`target/e2e-venv`, pinned in
`tests/e2e/requirements.txt`), starts Synapse with its media repository on
(SQLite, its default) and mxmedia on the embedded default (local directory
with fsync + sled) checking tokens against that Synapse, and runs the same
loads against both with wrk. It prints the table and writes it into
docs/benchmarks.md (section `load_bench`). Needs wrk (apt install wrk).
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchdoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_NAME = "bench.test"
VENV = os.path.join(ROOT, "target", "e2e-venv")
REQUIREMENTS = os.path.join(ROOT, "tests", "e2e", "requirements.txt")
MAX_UPLOAD = 200 * 1024 * 1024


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python():
    py = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, "mxmedia-e2e-packages")
    wanted = open(REQUIREMENTS).read()
    if not (os.path.exists(marker) and open(marker).read() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", REQUIREMENTS], check=True)
        open(marker, "w").write(wanted)
    return py


def request(port, method, path, body=None, token=None, headers=None, timeout=600):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=h)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def wait_up(port, path, proc, name):
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}")
        try:
            status, _ = request(port, "GET", path, timeout=2)
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{name} did not come up")


def rss_mb(pid, field="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_synapse(py, work):
    d = os.path.join(work, "synapse")
    os.makedirs(d)
    port = free_port()
    config = f"""server_name: "{SERVER_NAME}"
pid_file: "{d}/homeserver.pid"
listeners:
  - port: {port}
    bind_addresses: ["127.0.0.1"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "{d}/homeserver.db"
log_config: "{d}/log.yaml"
media_store_path: "{d}/media_store"
signing_key_path: "{d}/signing.key"
enable_media_repo: true
max_upload_size: {MAX_UPLOAD}
dynamic_thumbnails: true
url_preview_enabled: false
enable_registration: true
enable_registration_without_verification: true
report_stats: false
trusted_key_servers: []
suppress_key_server_warning: true
macaroon_secret_key: "bench-macaroon"
form_secret: "bench-form"
rc_login:
  address: {{per_second: 10000, burst_count: 10000}}
  account: {{per_second: 10000, burst_count: 10000}}
rc_registration: {{per_second: 10000, burst_count: 10000}}
rc_media_create: {{per_second: 100000, burst_count: 100000}}
"""
    open(os.path.join(d, "homeserver.yaml"), "w").write(config)
    open(os.path.join(d, "log.yaml"), "w").write(
        "version: 1\nhandlers:\n  console:\n    class: logging.StreamHandler\nroot:\n  level: WARNING\n  handlers: [console]\n"
    )
    cfg = os.path.join(d, "homeserver.yaml")
    subprocess.run([py, "-m", "synapse.app.homeserver", "--generate-keys", "-c", cfg], check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(d, "stdout.log"), "w")
    proc = subprocess.Popen([py, "-m", "synapse.app.homeserver", "-c", cfg], stdout=log, stderr=log)
    wait_up(port, "/health", proc, "synapse")
    return proc, port


def start_mxmedia(work, hs_port, binary=None, name="mxmedia", extra=""):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port()
    cfg = os.path.join(d, "config.yaml")
    open(cfg, "w").write(
        f"server_name: {SERVER_NAME}\nlisten: 127.0.0.1:{port}\ndata_dir: {d}\n"
        f"homeserver: {{url: 'http://127.0.0.1:{hs_port}'}}\n"
        f"media: {{max_upload_size: {MAX_UPLOAD}}}\nlog: {{level: warn}}\n" + extra
    )
    binary = binary or os.path.join(ROOT, "target", "release", "mxmedia")
    log = open(os.path.join(d, "stdout.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--config", cfg], stdout=log, stderr=log)
    wait_up(port, "/healthz", proc, "mxmedia")
    return proc, port


def start_postgres(work):
    """A PostgreSQL cluster of Debian's binaries on a free port (as the
    `postgres` user when run as root); returns (process, port)."""
    import glob
    import pwd

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not bins:
        sys.exit("PostgreSQL's server binaries are needed: apt-get install postgresql")
    bin_dir = bins[-1]
    d = os.path.join(work, "postgres")
    os.makedirs(d)
    port = free_port()
    as_postgres = os.geteuid() == 0
    if as_postgres:
        pw = pwd.getpwnam("postgres")
        os.chown(work, pw.pw_uid, pw.pw_gid)
        os.chown(d, pw.pw_uid, pw.pw_gid)
    prefix = ["runuser", "-u", "postgres", "--"] if as_postgres else []
    subprocess.run(prefix + [f"{bin_dir}/initdb", "-D", f"{d}/data", "-U", "postgres", "-A", "trust", "--locale=C", "-E", "UTF8"],
                   check=True, stdout=subprocess.DEVNULL)
    log = open(os.path.join(work, "postgres.log"), "w")
    # The same durability as the sled runs: fsync on.
    proc = subprocess.Popen(prefix + [f"{bin_dir}/postgres", "-D", f"{d}/data", "-p", str(port), "-k", d,
                                      "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"],
                            stdout=log, stderr=log)
    deadline = time.time() + 60
    while time.time() < deadline:
        ready = subprocess.run([f"{bin_dir}/pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if ready.returncode == 0:
            break
        time.sleep(0.2)
    for db in ("single", "pair"):
        subprocess.run([f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", db], check=True)
    return proc, port


def run_nginx(d, http, top=""):
    """nginx under `d` with one worker and no access log: `top` before its
    events block, `http` inside its http block. Returns the process."""
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = (
        f"{top}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{\n"
        f"  client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n"
        f"  fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n"
        f"  access_log off;\n{http}}}\n"
    )
    path = os.path.join(d, "nginx.conf")
    open(path, "w").write(conf)
    nginx = next(p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p))
    log = open(os.path.join(d, "stdout.log"), "w")
    return subprocess.Popen([nginx, "-p", d, "-c", path, "-g", "daemon off;"], stdout=log, stderr=log)


def start_nginx(work, upstreams):
    """nginx in front of `upstreams` (one worker, as in the nginx rows)."""
    port = free_port()
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in upstreams)
    proc = run_nginx(
        os.path.join(work, "nginx"),
        f"  upstream mxmedia {{\n{servers}    keepalive 64;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    client_max_body_size 200m;\n"
        f"    location / {{\n      proxy_pass http://mxmedia;\n      proxy_http_version 1.1;\n"
        f"      proxy_set_header Connection \"\";\n      proxy_request_buffering off;\n      proxy_buffering off;\n    }}\n  }}\n",
    )
    return proc, port


def register(hs_port):
    status, data = request(
        hs_port,
        "POST",
        "/_matrix/client/v3/register",
        {"username": "bench", "password": "bench-password-1", "auth": {"type": "m.login.dummy"}},
    )
    if status != 200:
        sys.exit(f"register: {status} {data[:200]!r}")
    return json.loads(data)["access_token"]


def upload(port, token, body, content_type="application/octet-stream"):
    status, data = request(port, "POST", "/_matrix/media/v3/upload", body, token, {"Content-Type": content_type})
    if status != 200:
        sys.exit(f"upload to {port}: {status} {data[:200]!r}")
    return json.loads(data)["content_uri"][len("mxc://") :]


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# CPU seconds per wrk second of the last wrk run: (server, wrk).
LAST_CPU = {}


def wrk(port, token, script, seconds, connections, work, name, pid=None):
    path = os.path.join(work, f"{name}-{port}.lua")
    open(path, "w").write(script.replace("@TOKEN@", token).replace("@NONCE@", os.urandom(4).hex()))
    import resource

    server_before = cpu_seconds(pid) if pid else 0.0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", path, f"http://127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    LAST_CPU["server"] = ((cpu_seconds(pid) - server_before) / seconds) if pid else 0.0
    LAST_CPU["wrk"] = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / seconds
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    if bad or errors:
        print(f"  note ({name} on {port}): {bad.group(0) if bad else ''} {errors.group(0) if errors else ''}")
    return rps, (int(bad.group(1)) if bad else 0)


UPLOAD_LUA = """
-- Every body is distinct, across wrk's threads and across runs (@NONCE@),
-- as real uploads are: nothing is deduplicated against an earlier upload.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local base = string.rep("m", 65536 - 32)
local n = 0
request = function()
  n = n + 1
  local body = string.format("%8s%08d%016d", "@NONCE@", tid, n) .. base
  return wrk.format("POST", "/_matrix/media/v3/upload",
    {["Authorization"] = "Bearer @TOKEN@", ["Content-Type"] = "application/octet-stream"}, body)
end
"""

GET_ONE_LUA = """
wrk.method = "GET"
wrk.path = "@PATH@"
wrk.headers["Authorization"] = "Bearer @TOKEN@"
"""

GET_MANY_LUA = """
local paths = {@PATHS@}
math.randomseed(42)
request = function()
  return wrk.format("GET", paths[math.random(#paths)], {["Authorization"] = "Bearer @TOKEN@"})
end
"""


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def download_whole(port, path, headers, size, what):
    """GETs `path` to the end, a MiB at a time; exits unless it is `size` bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    n = 0
    while True:
        part = resp.read(1024 * 1024)
        if not part:
            break
        n += len(part)
    conn.close()
    if resp.status != 200 or n != size:
        sys.exit(f"{what}: {resp.status}, {n} bytes")


def big_transfer(port, token, pid):
    size = 100 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    before = rss_mb(pid)

    def body():
        for _ in range(size // len(chunk)):
            yield chunk

    def up():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.putrequest("POST", "/_matrix/media/v3/upload")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        for part in body():
            conn.send(part)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        if resp.status != 200:
            sys.exit(f"100 MiB upload: {resp.status} {data[:200]!r}")
        return json.loads(data)["content_uri"][len("mxc://") :]

    up_s, media = timed(up)

    down_s, _ = timed(
        lambda: download_whole(
            port, f"/_matrix/client/v1/media/download/{media}", {"Authorization": f"Bearer {token}"}, size, "100 MiB download"
        )
    )
    peak = rss_mb(pid, "VmHWM")
    return {
        "up_mbs": size / up_s / 1e6,
        "down_mbs": size / down_s / 1e6,
        "rss_growth_mb": max(0.0, peak - before),
    }


def thumbnails(port, token, jpeg):
    cold = []
    for _ in range(3):
        media = upload(port, token, jpeg, "image/jpeg")
        path = f"/_matrix/client/v1/media/thumbnail/{media}?width=320&height=240&method=scale"
        t, (status, data) = timed(lambda: request(port, "GET", path, None, token))
        if status != 200:
            sys.exit(f"thumbnail on {port}: {status} {data[:200]!r}")
        cold.append(t * 1000)
    warm = []
    for _ in range(20):
        t, (status, _) = timed(lambda: request(port, "GET", path, None, token))
        warm.append(t * 1000)
    return statistics.median(cold), statistics.median(warm)


def cpu_note():
    return f"(server {LAST_CPU['server']:.2f} cores, wrk {LAST_CPU['wrk']:.2f} cores)"


def start_static(work):
    """nginx serving files from disk as a static server would: one worker,
    sendfile on, no logging. The physical limit for serving bytes here."""
    d = os.path.join(work, "static")
    root = os.path.join(d, "root")
    os.makedirs(os.path.join(root, "many"))
    open(os.path.join(root, "one.bin"), "wb").write(os.urandom(64 * 1024))
    for i in range(1000):
        open(os.path.join(root, "many", f"{i}.bin"), "wb").write(os.urandom(4096))
    with open(os.path.join(root, "big.bin"), "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1024 * 1024))
    port = free_port()
    # One process that serves (no master, so its CPU is the pid's, and it
    # reads the files as the user who started it).
    proc = run_nginx(
        d,
        f"  sendfile on;\n  tcp_nopush on;\n  default_type application/octet-stream;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n",
        top="master_process off;\n",
    )
    wait_up(port, "/one.bin", proc, "nginx")
    return proc, port


def measure_static(port, pid, seconds, work):
    """The download loads against nginx serving the same bytes from disk."""
    print("== nginx (static files)", flush=True)
    r = {"idle_rss_mb": rss_mb(pid)}
    status, _ = request(port, "GET", "/one.bin")
    if status != 200:
        sys.exit(f"nginx static: {status}")
    script = GET_ONE_LUA.replace("@PATH@", "/one.bin")
    r["download_rps"], _ = wrk(port, "none", script, seconds, 64, work, "download", pid)
    r["download_cpu"] = dict(LAST_CPU)
    print(f"  download 64 KiB c64: {r['download_rps']:.0f} req/s {cpu_note()}", flush=True)
    paths = ",".join(f'"/many/{i}.bin"' for i in range(1000))
    script = GET_MANY_LUA.replace("@PATHS@", paths)
    r["many_rps"], _ = wrk(port, "none", script, seconds, 64, work, "many", pid)
    r["many_cpu"] = dict(LAST_CPU)
    print(f"  1,000 x 4 KiB random c64: {r['many_rps']:.0f} req/s {cpu_note()}", flush=True)
    size = 100 * 1024 * 1024

    down_s, _ = timed(lambda: download_whole(port, "/big.bin", {}, size, "nginx 100 MiB download"))
    r["down_mbs"] = size / down_s / 1e6
    print(f"  100 MiB download: {r['down_mbs']:.0f} MB/s", flush=True)
    return r


def measure(name, port, token, pid, seconds, work, jpeg):
    print(f"== {name}", flush=True)
    r = {"idle_rss_mb": rss_mb(pid)}
    r["upload_rps"], _ = wrk(port, token, UPLOAD_LUA, seconds, 16, work, "upload", pid)
    r["upload_cpu"] = dict(LAST_CPU)
    print(f"  upload 64 KiB c16: {r['upload_rps']:.0f} req/s {cpu_note()}", flush=True)
    one = upload(port, token, os.urandom(64 * 1024))
    script = GET_ONE_LUA.replace("@PATH@", f"/_matrix/client/v1/media/download/{one}")
    r["download_rps"], _ = wrk(port, token, script, seconds, 64, work, "download", pid)
    r["download_cpu"] = dict(LAST_CPU)
    print(f"  download 64 KiB c64: {r['download_rps']:.0f} req/s {cpu_note()}", flush=True)
    paths = []
    for _ in range(1000):
        media = upload(port, token, os.urandom(4096))
        paths.append(f'"/_matrix/client/v1/media/download/{media}"')
    script = GET_MANY_LUA.replace("@PATHS@", ",".join(paths))
    r["many_rps"], _ = wrk(port, token, script, seconds, 64, work, "many", pid)
    r["many_cpu"] = dict(LAST_CPU)
    print(f"  1,000 x 4 KiB random c64: {r['many_rps']:.0f} req/s {cpu_note()}", flush=True)
    r.update(big_transfer(port, token, pid))
    print(f"  100 MiB: up {r['up_mbs']:.0f} MB/s, down {r['down_mbs']:.0f} MB/s, RSS +{r['rss_growth_mb']:.1f} MiB", flush=True)
    r["thumb_cold_ms"], r["thumb_warm_ms"] = thumbnails(port, token, jpeg)
    print(f"  12 MP thumbnail: cold {r['thumb_cold_ms']:.1f} ms, warm {r['thumb_warm_ms']:.1f} ms", flush=True)
    return r


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--no-scale-out",
        action="store_true",
        help="skip the PostgreSQL and two-instance runs (section load_bench_scale_out)",
    )
    parser.add_argument(
        "--baseline",
        metavar="BINARY",
        help="another mxmedia build (e.g. the previous release) measured in the same run; "
        "its table goes to docs/benchmarks.md (section load_bench_baseline)",
    )
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--features", "turbojpeg", "--bin", "mxmedia", "--example", "thumb_compare"], cwd=ROOT, check=True)
    py = python()
    work = tempfile.mkdtemp(prefix="load-bench-")
    subprocess.run([os.path.join(ROOT, "target", "release", "examples", "thumb_compare"), "gen", work], check=True, stdout=subprocess.DEVNULL)
    jpeg = open(os.path.join(work, "photo12mp.jpg"), "rb").read()
    synapse, hs_port = start_synapse(py, work)
    mxmedia = baseline = None
    before = None
    scale = {}
    extra_procs = []
    try:
        token = register(hs_port)
        mxmedia, mx_port = start_mxmedia(work, hs_port)
        if args.baseline:
            baseline, base_port = start_mxmedia(work, hs_port, os.path.abspath(args.baseline), "baseline")
        time.sleep(2)  # let them settle before reading idle RSS
        ours = measure("mxmedia", mx_port, token, mxmedia.pid, args.seconds, work, jpeg)
        if baseline is not None:
            before = measure("baseline", base_port, token, baseline.pid, args.seconds, work, jpeg)
        theirs = measure("Synapse", hs_port, token, synapse.pid, args.seconds, work, jpeg)
        static_proc, static_port = start_static(work)
        extra_procs.append(static_proc)
        static = measure_static(static_port, static_proc.pid, args.seconds, work)
        if not args.no_scale_out:
            scale = scale_out(work, hs_port, token, args.seconds, jpeg, extra_procs)
    finally:
        for proc in [mxmedia, baseline, synapse] + extra_procs:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    print(f"  note: {proc.args[0]} did not stop within 30 s of SIGTERM; killed", flush=True)
                    proc.kill()
                    proc.wait()
        # Several GB of uploads by the end: never leave them behind.
        shutil.rmtree(work, ignore_errors=True)
    # Kept before anything is written, so no run is lost to a bug below.
    with open(os.path.join(ROOT, "target", "load-bench.json"), "w") as f:
        json.dump({"mxmedia": ours, "synapse": theirs, "static": static, "scale_out": scale}, f, indent=1)
    write_table(ours, theirs, static, args.seconds)
    write_chart(py, ours, theirs, static)
    if before is not None:
        write_baseline(ours, before, args.baseline)
    if scale:
        write_scale_out(ours, scale)


def scale_out(work, hs_port, token, seconds, jpeg, procs):
    """mxmedia on PostgreSQL, and two instances on one PostgreSQL database
    and one datastore behind nginx (same machine: overhead, not scaling)."""
    pg, pg_port = start_postgres(work)
    procs.append(pg)
    url = f"postgres://postgres@127.0.0.1:{pg_port}"
    single, single_port = start_mxmedia(work, hs_port, name="mxmedia-pg", extra=f"database: {{type: postgres, url: '{url}/single'}}\n")
    procs.append(single)
    time.sleep(1)
    out = {"postgres": measure("mxmedia on PostgreSQL", single_port, token, single.pid, seconds, work, jpeg)}
    shared = os.path.join(work, "shared-media")
    ports = []
    for i in range(2):
        proc, port = start_mxmedia(
            work, hs_port, name=f"mxmedia-pair{i}",
            extra=f"database: {{type: postgres, url: '{url}/pair'}}\ndatastores:\n  - {{type: local, id: shared, path: {shared}}}\n",
        )
        procs.append(proc)
        ports.append(port)
    proxy, proxy_port = start_nginx(work, ports)
    procs.append(proxy)
    wait_up(proxy_port, "/healthz", proxy, "nginx")
    time.sleep(1)
    out["pair"] = measure("two instances behind nginx", proxy_port, token, procs[-2].pid, seconds, work, jpeg)
    return out


def write_scale_out(sled, scale):
    pg, pair = scale["postgres"], scale["pair"]
    lines = [
        "The same run, mxmedia with its metadata in PostgreSQL (a cluster on the same machine, fsync on,",
        "default settings) instead of sled, and two instances on one PostgreSQL database and one local",
        "datastore behind nginx (one worker). Everything shares the same 2 cores, so the PostgreSQL",
        "column shows the cost of a networked database and the last one the cost of the extra hop,",
        "not the gain of a second machine. Memory columns of the pair are one instance's.",
        "",
        "| load | sled | PostgreSQL | PostgreSQL / sled | two instances + nginx | pair / sled |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, unit, higher, _ in ROWS:
        a, b, c = sled[key], pg[key], pair[key]
        lines.append(
            f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {better_by(b, a, higher):.2f}x | {c:.1f} {unit} | {better_by(c, a, higher):.2f}x |"
        )
    text = "\n".join(lines)
    print(text)
    benchdoc.replace_section("load_bench_scale_out", text)


ROWS = [
    # key, label, unit, higher is better, target ratio (ours/theirs, or theirs/ours when lower is better)
    ("download_rps", "download one 64 KiB file, c64", "req/s", True, 10),
    ("many_rps", "1,000 distinct 4 KiB files at random, c64", "req/s", True, 8),
    ("upload_rps", "upload 64 KiB (durable), c16", "req/s", True, 5),
    ("up_mbs", "100 MiB upload", "MB/s", True, 2),
    ("down_mbs", "100 MiB download", "MB/s", True, 2),
    ("rss_growth_mb", "RSS growth over the 100 MiB transfer", "MiB", False, None),
    ("thumb_cold_ms", "12 MP JPEG -> 320x240 thumbnail, cold", "ms", False, 4),
    ("thumb_warm_ms", "same thumbnail, warm", "ms", False, None),
    ("idle_rss_mb", "idle RSS", "MiB", False, 4),
]


def better_by(ours, theirs, higher):
    """How many times better `ours` is: a throughput ratio, or an inverse one for times and memory."""
    if higher:
        return ours / theirs if theirs else float("inf")
    return theirs / ours if ours else float("inf")


# The loads nginx serving static files is measured on, with the target
# ratio mxmedia / nginx.
STATIC_ROWS = [
    ("download_rps", 0.5),
    ("many_rps", 0.5),
    ("down_mbs", 0.8),
]


def cpu_cell(r, key):
    if not key.endswith("_rps"):
        return ""
    cpu = r.get(key.replace("_rps", "_cpu"))
    if not cpu:
        return ""
    return f"{cpu['server']:.2f} / {cpu['wrk']:.2f}"


def write_table(ours, theirs, static, seconds):
    cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
    synapse_version = open(REQUIREMENTS).read().split()[0]
    lines = [
        f"Measured by `python3 scripts/load_bench.py` on {time.strftime('%Y-%m-%d')}, {cpu}, {os.cpu_count()} cores shared by",
        f"the server and wrk (`-t2`, {seconds} s per loop). Both servers on 127.0.0.1 in the same run, logging at",
        f"warning level: mxmedia (release, `--features turbojpeg`, local datastore with fsync, sled) and {synapse_version}",
        "with its media repository on (SQLite, its default; thumbnails made on request). mxmedia checks each token",
        "with that Synapse (cached). Uploads are distinct bodies. RSS growth is the peak over the idle RSS.",
        "Ratio: how many times better mxmedia is (throughput ours/theirs; times and memory theirs/ours).",
        "The nginx column is nginx serving the same bytes as static files from disk (one worker, `sendfile on`),",
        "under the same wrk settings: the physical limit for serving bytes on this machine. CPU: cores the server",
        "and wrk used during each wrk loop (CPU seconds per second).",
        "",
        "| load | mxmedia | Synapse | mxmedia / Synapse | target | nginx static | mxmedia / nginx | target | CPU mxmedia / wrk | CPU Synapse / wrk | CPU nginx / wrk |",
        "|---|---:|---:|---:|---|---:|---:|---|---|---|---|",
    ]
    static_targets = dict(STATIC_ROWS)
    for key, label, unit, higher, target in ROWS:
        a, b = ours[key], theirs[key]
        ratio = better_by(a, b, higher)
        mark = ""
        if target is not None:
            mark = f">= {target}x " + ("met" if ratio >= target else "missed")
        n_cell = n_ratio = n_mark = ""
        if key in static_targets and key in static:
            n = static[key]
            n_cell = f"{n:.1f} {unit}"
            n_ratio_value = better_by(a, n, higher)
            n_ratio = f"{n_ratio_value:.2f}"
            t = static_targets[key]
            n_mark = f">= {t} " + ("met" if n_ratio_value >= t else "missed")
        lines.append(
            f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio:.1f}x | {mark} | {n_cell} | {n_ratio} | {n_mark} "
            f"| {cpu_cell(ours, key)} | {cpu_cell(theirs, key)} | {cpu_cell(static, key)} |"
        )
    growth = ours["rss_growth_mb"]
    lines.append("")
    lines.append(f"mxmedia's RSS growth over the 100 MiB transfer: {growth:.1f} MiB (target <= 16 MiB: {'met' if growth <= 16 else 'missed'}).")
    idle = ours["idle_rss_mb"] / theirs["idle_rss_mb"] if theirs["idle_rss_mb"] else 0
    lines.append(f"mxmedia's idle RSS is {idle:.2f} of Synapse's (target < 0.25: {'met' if idle < 0.25 else 'missed'}).")
    lines.append("")
    lines.append("![req/s per load: mxmedia, Synapse, nginx](load-bench.png)")
    text = "\n".join(lines)
    print(text)
    benchdoc.replace_section("load_bench", text)


CHART = r"""
import json, sys
from PIL import Image, ImageDraw
data = json.loads(sys.argv[1])
loads, servers = data["loads"], data["servers"]
colors = {"mxmedia": (46, 125, 50), "Synapse": (21, 101, 192), "nginx static": (120, 120, 120)}
w, h, left, bottom, top = 900, 420, 70, 70, 40
img = Image.new("RGB", (w, h), "white")
d = ImageDraw.Draw(img)
peak = max(v for s in servers.values() for v in s if v) or 1
group = (w - left - 20) / len(loads)
bar = group / (len(servers) + 1)
d.text((left, 10), "req/s per load (same run, same machine)", fill="black")
for tick in range(0, 6):
    y = h - bottom - (h - bottom - top) * tick / 5
    d.line([(left - 5, y), (w - 20, y)], fill=(230, 230, 230))
    d.text((5, y - 6), f"{peak * tick / 5:,.0f}", fill="black")
for i, load in enumerate(loads):
    x0 = left + i * group + bar / 2
    for j, (name, values) in enumerate(servers.items()):
        v = values[i]
        if not v:
            continue
        x = x0 + j * bar
        y = h - bottom - (h - bottom - top) * v / peak
        d.rectangle([x, y, x + bar * 0.9, h - bottom], fill=colors[name])
        d.text((x, y - 12), f"{v:,.0f}", fill="black")
    d.text((x0, h - bottom + 8), load, fill="black")
for j, name in enumerate(servers):
    d.rectangle([left + j * 160, h - 22, left + j * 160 + 12, h - 10], fill=colors[name])
    d.text((left + j * 160 + 18, h - 22), name, fill="black")
img.save(data["out"])
"""


def write_chart(py, ours, theirs, static):
    """docs/load-bench.png: req/s per load for the three servers, drawn with
    Pillow from the Synapse virtualenv."""
    keys = [("download_rps", "one 64 KiB file, c64"), ("many_rps", "1,000 x 4 KiB, c64"), ("upload_rps", "upload 64 KiB, c16")]
    data = {
        "loads": [label for _, label in keys],
        "servers": {
            "mxmedia": [ours[k] for k, _ in keys],
            "Synapse": [theirs[k] for k, _ in keys],
            "nginx static": [static.get(k, 0) for k, _ in keys],
        },
        "out": os.path.join(ROOT, "docs", "load-bench.png"),
    }
    subprocess.run([py, "-c", CHART, json.dumps(data)], check=True)


def write_baseline(ours, before, binary):
    lines = [
        f"The same run, mxmedia against another build of itself (`--baseline {os.path.basename(binary)}`),",
        "measured one after the other with the same loads. Ratio: this build over the baseline",
        "(throughput ours/theirs; times and memory theirs/ours); 1.0x is no change.",
        "",
        "| load | this build | baseline | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key, label, unit, higher, _ in ROWS:
        a, b = ours[key], before[key]
        ratio = better_by(a, b, higher)
        lines.append(f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {ratio:.2f}x |")
    text = "\n".join(lines)
    print(text)
    benchdoc.replace_section("load_bench_baseline", text)


if __name__ == "__main__":
    main()
