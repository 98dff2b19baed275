#!/usr/bin/env python3
"""The tunnel benchmark (called by bench/run, which installs and builds first).

On loopback, in one run, against nginx (plain and TLS origins) it measures
three ways to reach the origin: directly; through Fluidity (agent + server);
through what a user would assemble instead (stunnel with mutual TLS 1.3 and a
client certificate, in front of tinyproxy). It prints a Markdown table and
rewrites the tunnel section of docs/benchmarks.md.

usage: bench.py BIN_DIR CLIENT   (BIN_DIR holds the release binaries, CLIENT is bench-client)
"""
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TICKS = os.sysconf("SC_CLK_TCK")
KEEPALIVE_SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
DOWNLOAD_RUNS = int(os.environ.get("BENCH_RUNS", "3"))
GIB = 1 << 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.01)
    sys.exit(f"nothing listening on {port} after {timeout}s")


def cpu_seconds(pids):
    """User + system CPU of the processes and their threads (and reaped children)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


def rss_mib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return total / 1024


def tree(pid):
    """pid and its descendants (tinyproxy and stunnel may fork)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except OSError:
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class Stack:
    """The processes of one way through (none for direct)."""

    def __init__(self, name, proxy_port=None):
        self.name, self.proxy_port, self.procs = name, proxy_port, []

    def start(self, argv, port, **kw):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=kw.pop("stderr", subprocess.DEVNULL), **kw)
        self.procs.append(proc)
        wait_port(port)
        return proc

    def pids(self):
        return [p for proc in self.procs for p in tree(proc.pid)]

    def stop(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def setup(work, bins):
    certs = os.path.join(work, "certs")
    subprocess.run([os.path.join(bins, "fluidity-certs"), "--dir", certs, "--san", "127.0.0.1"], check=True,
                   stdout=subprocess.DEVNULL)
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "1k"), "wb") as f:
        f.write(b"x" * 1024)
    with open(os.path.join(www, "1g"), "wb") as f:
        f.truncate(GIB)
    os.chmod(work, 0o755)
    for d in (certs, www):
        os.chmod(d, 0o755)
    for name in os.listdir(certs):
        os.chmod(os.path.join(certs, name), 0o644)  # a throwaway CA, readable by the nginx/tinyproxy workers
    return certs, www


def start_nginx(work, certs, www):
    plain, tls = free_port(), free_port()
    conf = os.path.join(work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx.err warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 10000000; keepalive_timeout 600s;
  client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
  uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
  default_type application/octet-stream;
  server {{ listen 127.0.0.1:{plain}; root {www}; }}
  server {{ listen 127.0.0.1:{tls} ssl; root {www}; ssl_protocols TLSv1.3;
           ssl_certificate {certs}/server.crt; ssl_certificate_key {certs}/server.key; }}
}}
""")
    os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
    stack = Stack("nginx")
    stack.start(["nginx", "-p", work, "-c", conf, "-g", "daemon off;"], plain)
    wait_port(tls)
    return stack, plain, tls


def start_fluidity(bins, certs):
    server_port, agent_port = free_port(), free_port()
    stack = Stack("Fluidity", agent_port)
    env = dict(os.environ, RUST_LOG="warn")
    stack.start([os.path.join(bins, "fluidity-server"), "--listen", f"127.0.0.1:{server_port}", "--allow-loopback",
                 "--health-listen", "off", "--cert", f"{certs}/server.crt", "--key", f"{certs}/server.key",
                 "--ca", f"{certs}/ca.crt"], server_port, env=env)
    stack.start([os.path.join(bins, "fluidity-agent"), "--listen", f"127.0.0.1:{agent_port}",
                 "--server", f"127.0.0.1:{server_port}", "--cert", f"{certs}/client.crt",
                 "--key", f"{certs}/client.key", "--ca", f"{certs}/ca.crt"], agent_port, env=env)
    return stack


def start_stunnel_tinyproxy(work, certs, origin_ports):
    proxy, tunnel, client = free_port(), free_port(), free_port()
    stack = Stack("stunnel+tinyproxy", client)
    conf = os.path.join(work, "tinyproxy.conf")
    with open(conf, "w") as f:
        f.write(f"User nobody\nGroup nogroup\nPort {proxy}\nListen 127.0.0.1\nTimeout 600\nMaxClients 4096\n"
                f"Allow 127.0.0.1\nLogLevel Critical\nDisableViaHeader Yes\n"
                + "".join(f"ConnectPort {p}\n" for p in origin_ports))
    stack.start(["tinyproxy", "-d", "-c", conf], proxy)
    common = f"foreground = yes\npid =\nsslVersionMin = TLSv1.3\nCAfile = {certs}/ca.crt\nverifyChain = yes\n"
    with open(os.path.join(work, "stunnel-server.conf"), "w") as f:
        f.write(common + f"[fluidity-alternative]\naccept = 127.0.0.1:{tunnel}\nconnect = 127.0.0.1:{proxy}\n"
                f"cert = {certs}/server.crt\nkey = {certs}/server.key\nrequireCert = yes\n")
    with open(os.path.join(work, "stunnel-client.conf"), "w") as f:
        f.write(common + f"client = yes\n[fluidity-alternative]\naccept = 127.0.0.1:{client}\n"
                f"connect = 127.0.0.1:{tunnel}\ncert = {certs}/client.crt\nkey = {certs}/client.key\n"
                f"checkHost = fluidity-server\n")
    stack.start(["stunnel", os.path.join(work, "stunnel-server.conf")], tunnel)
    stack.start(["stunnel", os.path.join(work, "stunnel-client.conf")], client)
    return stack


def download(stack, plain):
    """Median MB/s of a 1 GiB download and the tunnel's CPU seconds per GiB."""
    speeds, cpus = [], []
    for _ in range(DOWNLOAD_RUNS):
        before = cpu_seconds(stack.pids()) if stack.procs else 0
        argv = ["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}"]
        if stack.proxy_port:
            argv += ["-x", f"http://127.0.0.1:{stack.proxy_port}"]
        out = subprocess.run(argv + [f"http://127.0.0.1:{plain}/1g"], check=True, capture_output=True, text=True)
        speed, size = (float(x) for x in out.stdout.split())
        if int(size) != GIB:
            sys.exit(f"{stack.name}: downloaded {size} bytes, not 1 GiB")
        speeds.append(speed / 1e6)
        if stack.procs:
            cpus.append(cpu_seconds(stack.pids()) - before)
    return statistics.median(speeds), (statistics.median(cpus) if cpus else None)


WRK_SCRIPT = """
local target = os.getenv("BENCH_TARGET")
if target ~= nil and target ~= "" then wrk.path = target end
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
               + summary.errors.status + summary.errors.timeout
  io.write(string.format('BENCH {"requests":%d,"seconds":%f,"p50_us":%d,"p99_us":%d,"errors":%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99), errors))
end
"""


def keepalive(stack, plain, work, connections):
    script = os.path.join(work, "bench.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    env = dict(os.environ)
    if stack.proxy_port:
        url, env["BENCH_TARGET"] = f"http://127.0.0.1:{stack.proxy_port}/", f"http://127.0.0.1:{plain}/1k"
    else:
        url, env["BENCH_TARGET"] = f"http://127.0.0.1:{plain}/1k", ""
    threads = str(min(2, connections))
    out = subprocess.run(["wrk", "-t", threads, "-c", str(connections), "-d", f"{KEEPALIVE_SECONDS}s",
                          "--timeout", "10s", "-s", script, url], capture_output=True, text=True, env=env, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("BENCH "))
    result = json.loads(line[6:])
    result["per_second"] = result["requests"] / result["seconds"]
    return result


def new_tunnels(stack, tls_port, certs, client):
    argv = [client, "tunnels", "--target", f"127.0.0.1:{tls_port}", "--ca", f"{certs}/ca.crt",
            "--name", "fluidity-server", "-c", "16", "-s", str(KEEPALIVE_SECONDS)]
    if stack.proxy_port:
        argv += ["--proxy", f"127.0.0.1:{stack.proxy_port}"]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)


def idle_rss(stack, plain, client):
    idle = {proc.args[0].rsplit("/", 1)[-1] + str(i): rss_mib(tree(proc.pid)) for i, proc in enumerate(stack.procs)}
    holder = subprocess.Popen([client, "hold", "--proxy", f"127.0.0.1:{stack.proxy_port}",
                               "--target", f"127.0.0.1:{plain}", "-n", "1000"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = holder.stdout.readline()
    if '"held":1000' not in ready:
        holder.kill()
        sys.exit(f"{stack.name}: could not hold 1000 tunnels: {ready} {holder.stderr.read()}")
    time.sleep(1)
    loaded = {proc.args[0].rsplit("/", 1)[-1] + str(i): rss_mib(tree(proc.pid)) for i, proc in enumerate(stack.procs)}
    holder.stdin.close()
    holder.wait(10)
    return idle, loaded


def start_time(argv, port):
    """Milliseconds from spawn to the port accepting, median of 10."""
    times = []
    for _ in range(10):
        started = time.monotonic()
        proc = subprocess.Popen(argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                if time.monotonic() - started > 5:
                    sys.exit(f"{argv(port)[0]} did not start")
                time.sleep(0.0005)
        times.append((time.monotonic() - started) * 1000)
        proc.terminate()
        proc.wait()
        port = free_port()
    return statistics.median(times)


def versions():
    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {
        "fluidity": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True).stdout.strip(),
        "rustc": first_line(["rustc", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "stunnel": first_line(["stunnel", "-version"]),
        "tinyproxy": first_line(["tinyproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "curl": first_line(["curl", "--version"]),
    }


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) // (1024 * 1024)
    return f"{os.cpu_count()} cores ({cpu}), {mem} GiB, {platform.system()} {platform.release()}"


def ratio(a, b):
    return f"{a / b:.2f}×" if a is not None and b else "–"


def fmt(value, unit=""):
    if value is None:
        return "–"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"


def main():
    bins, client = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="fluidity-bench-")
    stacks = []
    try:
        certs, www = setup(work, bins)
        nginx, plain, tls = start_nginx(work, certs, www)
        stacks.append(nginx)
        direct = Stack("direct")
        ours = start_fluidity(bins, certs)
        stacks.append(ours)
        peer = start_stunnel_tinyproxy(work, certs, [plain, tls])
        stacks.append(peer)
        ways = [direct, ours, peer]
        rows = []

        def row(name, values, unit="", target=None, met=None):
            d, o, p = values
            rows.append([name, fmt(d, unit), fmt(o, unit), fmt(p, unit), ratio(o, d), ratio(o, p),
                         target or "", "" if met is None else ("yes" if met else "**no**")])

        # Memory first, while the processes are fresh.
        ours_idle, ours_loaded = idle_rss(ours, plain, client)
        peer_idle, peer_loaded = idle_rss(peer, plain, client)
        print("rss", ours_idle, ours_loaded, peer_idle, peer_loaded, flush=True)

        # One untimed download first: the 1 GiB file's first read is from disk.
        subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{plain}/1g"], check=True)
        downloads = [download(w, plain) for w in ways]
        print("download", downloads, flush=True)
        keep = {c: [keepalive(w, plain, work, c) for w in ways] for c in (1, 64, 256)}
        print("keepalive", keep, flush=True)
        tunnels = [new_tunnels(w, tls, certs, client) for w in ways]
        print("tunnels", tunnels, flush=True)
        server_bin = os.path.join(bins, "fluidity-server")
        start_ours = start_time(lambda port: [server_bin, "--listen", f"127.0.0.1:{port}", "--health-listen", "off",
                                              "--cert", f"{certs}/server.crt", "--key", f"{certs}/server.key",
                                              "--ca", f"{certs}/ca.crt"], free_port())

        mbs = [d[0] for d in downloads]
        cpu = [d[1] for d in downloads]
        row("1 GiB download, MB/s", mbs, target="≥ 0.5× direct", met=mbs[1] >= 0.5 * mbs[0])
        row("tunnel CPU s per GiB", cpu, " s", target="≤ 2 s", met=cpu[1] <= 2.0)
        for c, results in keep.items():
            rps = [r["per_second"] for r in results]
            p50 = [r["p50_us"] / 1000 for r in results]
            p99 = [r["p99_us"] / 1000 for r in results]
            errors = [r["errors"] for r in results]
            row(f"1 KiB keep-alive c={c}, req/s", rps, target="≥ 0.35× direct" if c == 64 else None,
                met=rps[1] >= 0.35 * rps[0] if c == 64 else None)
            row(f"1 KiB c={c}, p50 ms", p50)
            row(f"1 KiB c={c}, p99 ms", p99, target="≤ 2.5× direct" if c == 64 else None,
                met=p99[1] <= 2.5 * p99[0] if c == 64 else None)
            if any(errors):
                rows.append([f"1 KiB c={c}, socket errors"] + [str(e) for e in errors] + ["", "", "", ""])
        rate = [t["per_second"] for t in tunnels]
        row("new HTTPS tunnels/s, c=16", rate, target="≥ 0.6× direct and ≥ 3× peer",
            met=rate[1] >= 0.6 * rate[0] and rate[1] >= 3 * rate[2])
        server_idle = next(v for k, v in ours_idle.items() if k.startswith("fluidity-server"))
        server_loaded = next(v for k, v in ours_loaded.items() if k.startswith("fluidity-server"))
        agent_idle = next(v for k, v in ours_idle.items() if k.startswith("fluidity-agent"))
        agent_loaded = next(v for k, v in ours_loaded.items() if k.startswith("fluidity-agent"))
        row("server RSS idle, MiB", [None, server_idle, sum(peer_idle.values())], " MiB")
        row("server RSS, 1000 idle tunnels, MiB", [None, server_loaded, sum(peer_loaded.values())], " MiB",
            target="≤ 32 MiB", met=server_loaded <= 32)
        row("agent RSS idle, MiB", [None, agent_idle, None], " MiB")
        rows.append(["agent RSS, 1000 idle tunnels, MiB", "–", fmt(agent_loaded, " MiB"), "–", "–", "–", "", ""])
        row("server start to accepting, ms", [None, start_ours, None], " ms", target="≤ 50 ms", met=start_ours <= 50)
    finally:
        for stack in reversed(stacks):
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    header = ["measure", "direct", "Fluidity", "stunnel+tinyproxy", "Fluidity / direct",
              "Fluidity / stunnel+tinyproxy", "target", "met"]
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    print(table)
    write_doc(table, peer_idle, peer_loaded)


def write_doc(table, peer_idle, peer_loaded):
    v = versions()
    section = f"""<!-- tunnel:begin (written by bench/run) -->
## Tunnel: Fluidity against direct and stunnel + tinyproxy

Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}.
Versions: Fluidity {v['fluidity']}, {v['rustc']}, {v['nginx']}, {v['stunnel']}, {v['tinyproxy']},
{v['wrk']}, {v['curl']}.

{table}

How it is measured (all on loopback, one run, same machine): nginx serves `/1k`
and a 1 GiB file over plain HTTP and over TLS 1.3. **direct** is the client
against nginx; **Fluidity** is the release agent and server (mutual TLS 1.3,
HTTP/2, default settings); **stunnel+tinyproxy** is stunnel in client mode
(TLS 1.3 only, client certificate, server name checked) to a stunnel server
(client certificate required) in front of tinyproxy. Downloads: curl, median of
{DOWNLOAD_RUNS}, CPU = user+system seconds of the tunnel processes (agent+server, or both
stunnels+tinyproxy) per GiB. 1 KiB: wrk for {KEEPALIVE_SECONDS} s per concurrency with keep-alive
(absolute-form requests to the proxies). New tunnels: `bench-client tunnels`
(CONNECT, TLS to the origin, `GET /1k`, close) from 16 workers for {KEEPALIVE_SECONDS} s. Memory:
VmRSS, idle and with 1000 idle CONNECT tunnels held by `bench-client hold`
(peer column: both stunnels and tinyproxy together; idle {sum(peer_idle.values()):.1f} MiB,
loaded {sum(peer_loaded.values()):.1f} MiB). Start: spawn to first accepted TCP connection, median of 10.

Rerun: `bench/run` (installs nginx, stunnel4, tinyproxy, wrk; builds release
binaries; about 5 minutes; `BENCH_SECONDS` and `BENCH_RUNS` shorten or lengthen it).
<!-- tunnel:end -->"""
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    if "<!-- tunnel:begin" in text:
        text = re.sub(r"<!-- tunnel:begin.*?<!-- tunnel:end -->", lambda _: section, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main()
