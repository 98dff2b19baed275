#!/usr/bin/env python3
"""Profiles Fluidity's agent and server during one bench/run measure.

    bench/profile.py BINS TOOLS MEASURE [SECONDS]

MEASURE is `download` (1 GiB on loopback), `c1` or `c64` (1 KiB keep-alive
with wrk), `tunnels` (new HTTPS tunnels, c=16) or `stream` (256 MiB over the
25 ms-each-way link). The stack is
started as bench/bench.py starts it; `perf record -e cpu-clock -g` samples
both processes for the measure, and the top of `perf report` (by DSO and
symbol, children not folded in) is printed. Needs Debian's linux-perf.
"""

import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    bins, tools, measure = sys.argv[1], sys.argv[2], sys.argv[3]
    work = tempfile.mkdtemp(prefix="fluidity-profile-")
    stacks = []
    try:
        certs, www = bench.setup(work, bins)
        _, plain, tls, _ = bench.start_nginx(work, certs, www, stacks)
        stack = bench.start_fluidity(bins, certs, stacks, delayed=measure == "stream")
        pids = [str(p.pid) for p in stack.procs]  # agent and server; the delay relay is a helper
        def io_counts():
            counts = {}
            for pid in pids:
                for line in open(f"/proc/{pid}/io"):
                    key, value = line.split(":")
                    if key in ("syscr", "syscw"):
                        counts[key] = counts.get(key, 0) + int(value)
            return counts
        before = io_counts()
        data = os.path.join(work, "perf.data")
        perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", data,
                                 "-p", ",".join(pids)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        counted = {}
        for pid, name in zip(pids, ("server", "agent")):
            counted[name] = subprocess.Popen(
                ["perf", "stat", "-x", ",", "-e", "syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,"
                 "syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,"
                 "syscalls:sys_enter_epoll_wait", "-p", pid],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if measure == "download":
            subprocess.run(["curl", "-sS", "-o", "/dev/null", f"http://127.0.0.1:{plain}/1g"], check=True)
            result = bench.download(stack, plain)
        elif measure == "tunnels":
            client = os.path.join(bins, "examples", "bench-client")
            result = bench.new_tunnels(stack, tls, certs, client)
        elif measure == "stream":
            result = bench.download(stack, plain, "/256m", 256 * bench.MIB)
        else:
            result = bench.keepalive(stack, plain, work, int(measure[1:]))
        perf.send_signal(2)
        perf.wait()
        for name, proc in counted.items():
            proc.send_signal(2)
            lines = proc.communicate()[1].splitlines()
            calls = {l.split(",")[2].split("sys_enter_")[-1]: l.split(",")[0] for l in lines if "sys_enter_" in l}
            print(name, "system calls:", calls)
        after = io_counts()
        print(measure, result, "read/write syscalls (agent + server):",
              {key: after[key] - before[key] for key in after})
        report = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "dso,symbol",
                                 "--stdio", "-g", "none", "--percent-limit", "0.7"],
                                capture_output=True, text=True).stdout
        print("\n".join(line for line in report.splitlines() if line and not line.startswith("#")))
        # Where each process spends its time: kernel, our code, libc, the allocator.
        by_dso = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "comm,dso",
                                 "--stdio", "-g", "none", "--percent-limit", "0.5"],
                                capture_output=True, text=True).stdout
        print("\n".join(line for line in by_dso.splitlines() if line and not line.startswith("#")))
    finally:
        for stack in reversed(stacks):
            stack.stop()


if __name__ == "__main__":
    main()
