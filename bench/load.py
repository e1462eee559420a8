#!/usr/bin/env python3
"""Load benchmark: stsguard against the floor, over TLS with keep-alive, HTTP/1.1 and HTTP/2.

    python3 bench/load.py [--duration 10] [--rate 2000]

Builds the release binary and the floor (examples/floor.rs: a minimal axum-server + rustls
server, sharing no code with stsguard, answering every AdmissionReview "allowed" after parsing it
with kube's `AdmissionReview<DynamicObject>`), generates a certificate, and for each server:
  - time from process start to /readyz answering 200, and resident memory when idle;
  - maximum throughput with oha (HTTP/1.1: 16 connections; HTTP/2: 4 connections x 8 streams)
    for captured reviews from tests/fixtures/admission, and the server's CPU time per review;
  - latency at a fixed rate (--rate reviews/s over 16 connections, measured from when each
    request is sent) with examples/latency.rs, a one-thread client that costs far less CPU than
    oha (which spent about three times the server's CPU per request on the same two cores, and
    whose own delays were most of the tail it measured); beside it, how fast the machine itself
    ran (the client's probe threads, one per CPU at real-time priority, time a fixed 25 us of
    work every 1 ms; a VM's CPUs can run several times slower for tens of ms at a time, and
    every request in such a window is late whatever the server does), the latency of the
    requests no slow window touched, and stsguard's own time per review from its log line
    (`latency_us`);
  - peak resident memory after all of it.
Rounds alternate between the servers and the median is shown. Prints Markdown tables for
BENCHMARKS.md, with stsguard's throughput and CPU per review as ratios of the floor's (targets:
throughput at least 1.1x, CPU at most 0.9x; p99 under 2 ms at 2,000 reviews/s). Needs oha (cargo install oha) on PATH.
--pin runs the fixed-rate client on one core and the server on the other; --rate-only skips the
throughput runs.
stsguard runs as in production: no cluster, default policy, one info log line per review (to a
file, as a container runtime would collect it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "admission"
LATENCY = ROOT / "target" / "release" / "examples" / "latency"
CASES = [
    ("StatefulSet CREATE, validate", "/validate", "validate-StatefulSet-CREATE-cap-web-1.json"),
    ("StatefulSet CREATE, mutate (patch)", "/mutate", "mutate-StatefulSet-CREATE-cap-db-1.json"),
    ("Service CREATE, validate", "/validate", "validate-Service-CREATE-cap-cache-1.json"),
]
PROTOCOLS = [("HTTP/1.1", ["-c", "16"]), ("HTTP/2", ["--http2", "-c", "4", "-p", "8"])]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readyz(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def memory_kib(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()[0] if value.split() else "0"
    return int(fields.get("VmRSS", 0)), int(fields.get("VmHWM", 0))


class Server:
    def __init__(self, name: str, argv: list[str], port: int, probe: int, log: Path):
        self.name, self.port, self.probe, self.log_path = name, port, probe, log
        self.log = open(log, "w")
        start = time.monotonic()
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)
        while not readyz(probe):
            if self.process.poll() is not None:
                sys.exit(f"{name} exited: see {log}")
            if time.monotonic() - start > 10:
                sys.exit(f"{name} not ready in 10 s")
            time.sleep(0.001)
        self.ready_ms = (time.monotonic() - start) * 1000
        time.sleep(1)
        self.idle_rss = memory_kib(self.process.pid)[0]

    def stop(self) -> int:
        peak = memory_kib(self.process.pid)[1]
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()
        return peak


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_latencies(log: Path, offset: int) -> list[int]:
    """stsguard's own time per review (`latency_us`) from the review lines logged after `offset`."""
    time.sleep(0.2)  # the log is written in batches every 20 ms
    with open(log, "rb") as f:
        f.seek(offset)
        lines = [json.loads(line) for line in f.read().splitlines() if line.startswith(b"{")]
    return sorted(line["latency_us"] for line in lines if line.get("message") == "review")


def oha(server: "Server", ca: Path, path: str, body: Path, protocol: list[str], extra: list[str]) -> dict:
    port = server.port
    before = cpu_seconds(server.process.pid)
    argv = ["oha", "--no-tui", "--output-format", "json", "--cacert", str(ca), "-m", "POST",
            "-H", "content-type: application/json", "-D", str(body), *protocol, *extra,
            f"https://localhost:{port}{path}?timeout=5s"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    codes = result.get("statusCodeDistribution", {})
    if set(codes) != {"200"} or result["summary"]["successRate"] < 1.0:
        sys.exit(f"non-200 answers or errors: {codes} {result.get('errorDistribution')}")
    # The server's own CPU per answered review: unlike throughput, it does not depend on how
    # much of the two cores the load generator takes.
    result["cpuMicrosPerReview"] = (cpu_seconds(server.process.pid) - before) * 1e6 / sum(codes.values())
    return result


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of the process onto `cpus` (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except ProcessLookupError:
            pass


def fixed_rate(server: "Server", ca: Path, path: str, body: Path, rate: int, seconds: int,
               pinned: bool) -> dict:
    offset = server.log_path.stat().st_size
    argv = [str(LATENCY), f"https://localhost:{server.port}{path}?timeout=5s", str(body), str(ca),
            str(rate), str(seconds), "16"]
    cpus = os.sched_getaffinity(0)
    # Pinned: the server on the first core, the client on the other, as an API server calling a
    # webhook runs on other CPUs than the webhook's (the client's probe threads pin themselves
    # to every CPU).
    if pinned:
        pin(server.process.pid, {min(cpus)})
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, {max(cpus)}))
                             if pinned else None).stdout
    finally:
        if pinned:
            pin(server.process.pid, cpus)
    result = json.loads(out)
    if server.name == "stsguard":
        result["ownLatencyUs"] = own_latencies(server.log_path, offset)
    return result


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def optional_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def percentile(ordered: list[int], q: float) -> int:
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--rate", type=int, default=2000, help="reviews/s for the latency run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per server and case")
    parser.add_argument("--rate-only", action="store_true", help="only the fixed-rate runs")
    parser.add_argument("--pin", action="store_true",
                        help="fixed-rate runs with the server on one core and the client on another")
    parser.add_argument("--no-build", action="store_true",
                        help="use target/release as it is (built with: cargo build --release "
                             "--bin stsguard --example floor --example latency)")
    args = parser.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha not found: cargo install oha")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stsguard", "--example", "floor",
                        "--example", "latency"],
                       cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "stsguard"
    floor = ROOT / "target" / "release" / "examples" / "floor"
    work = Path(tempfile.mkdtemp(prefix="stsguard-load-"))
    certs = work / "certs"
    subprocess.run([binary, "certs", "generate", "--out", certs, "--dns", "localhost", "--ip", "127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL)
    tls = [str(certs / "tls.crt"), str(certs / "tls.key")]

    print(f"# {os.cpu_count()} cores, {args.duration} s per run, {args.repeat} interleaved runs per "
          f"server and case (throughput: the median run); the clients on the same machine\n")
    servers: dict[str, Server] = {}
    for name in ["floor", "stsguard"]:
        port, probe = free_port(), free_port()
        if name == "floor":
            argv = [str(floor), f"127.0.0.1:{port}", f"127.0.0.1:{probe}", *tls]
        else:
            argv = [str(binary), "serve", "--no-cluster", "--addr", f"127.0.0.1:{port}",
                    "--probe-addr", f"127.0.0.1:{probe}", "--tls-cert", tls[0], "--tls-key", tls[1],
                    "--log-format", "json"]
        servers[name] = Server(name, argv, port, probe, work / f"{name}.log")

    # How the machine runs with nothing of ours under load: the baseline for the slow windows the
    # fixed-rate runs report.
    alone = json.loads(subprocess.run([str(LATENCY), "--machine", str(args.duration)], check=True,
                                      capture_output=True, text=True).stdout)["machine"]
    print(f"The machine alone, both servers idle, {args.duration} s: its CPUs ran the probe's work more than "
          f"3x slower {alone['slowCpuPercent']:.1f} % of the time; counting the probe's late wake-ups as "
          f"well (mostly an idle CPU's), slow {alone['slowPercent']:.1f} % of the time in "
          f"{alone['slowWindows']} windows (probe: {alone['workUs']:.0f} us of work, {alone['probe']} "
          f"priority)\n")

    # Runs alternate between the two servers, so that drift in what the machine gives us
    # (this is a shared 2-core VM) falls on both alike.
    results: dict[str, dict] = {name: {"runs": {}} for name in servers}
    for case, path, fixture in CASES:
        for protocol, flags in [] if args.rate_only else PROTOCOLS:
            samples: dict[str, list[dict]] = {name: [] for name in servers}
            for _ in range(args.repeat):
                for name, server in servers.items():
                    samples[name].append(oha(server, certs / "ca.crt", path, FIXTURES / fixture, flags,
                                             ["-z", f"{args.duration}s"]))
            for name, runs in samples.items():
                runs.sort(key=lambda r: r["summary"]["requestsPerSec"])
                results[name]["runs"][(case, protocol, "max")] = runs[len(runs) // 2]
        # Each fixed-rate run is shown, not a median: the tail is what differs between them.
        for _ in range(args.repeat):
            for name, server in servers.items():
                results[name]["runs"].setdefault((case, "rate"), []).append(
                    fixed_rate(server, certs / "ca.crt", path, FIXTURES / fixture, args.rate,
                               args.duration, args.pin))
    for name, server in servers.items():
        results[name].update(ready_ms=server.ready_ms, idle_rss=server.idle_rss, peak=server.stop())

    print("| server | ready after start | RSS idle | RSS peak (after all runs) |")
    print("|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['ready_ms']:.0f} ms | {r['idle_rss'] / 1024:.1f} MB | {r['peak'] / 1024:.1f} MB |")

    if not args.rate_only:
        print("\nMaximum throughput (reviews/s) and latency under that load (ms):\n")
        print("| review | protocol | floor rps | stsguard rps | ratio (≥ 1.1) | CPU µs/review floor "
              "| stsguard | ratio (≤ 0.9) | stsguard p50 | p99 | p99.9 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for case, _, _ in CASES:
            for protocol, _ in PROTOCOLS:
                f = results["floor"]["runs"][(case, protocol, "max")]
                s = results["stsguard"]["runs"][(case, protocol, "max")]
                fr, sr = f["summary"]["requestsPerSec"], s["summary"]["requestsPerSec"]
                p = s["latencyPercentiles"]
                fc, sc = f["cpuMicrosPerReview"], s["cpuMicrosPerReview"]
                print(f"| {case} | {protocol} | {fr:,.0f} | {sr:,.0f} | {sr / fr:.2f} | "
                      f"{fc:.0f} | {sc:.0f} | {sc / fc:.2f} | "
                      f"{ms(p['p50'])} | {ms(p['p99'])} | {ms(p['p99.9'])} |")
    where = ", the server pinned to one core and the client to the other" if args.pin else ""
    print(f"\nLatency at a fixed {args.rate} reviews/s (HTTP/1.1, 16 connections, examples/latency.rs{where}; "
          "ms), every run in the order run: all requests; the share of the run in which the machine "
          "ran slow (a probe woken over 0.5 ms late, or its fixed work taking over 3x its median) and "
          "in how many windows; the requests no slow window touched; stsguard's own time per review "
          "(its log):\n")
    print("| review | server | run | achieved rps | p50 | p99 | p99.9 | max | machine slow (windows) "
          "| untouched requests | untouched p99 | p99.9 | own p50 / p99 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case, _, _ in CASES:
        for name in ["floor", "stsguard"]:
            for i, r in enumerate(results[name]["runs"][(case, "rate")], 1):
                machine, untouched = r["machine"], r["untouched"]
                own = r.get("ownLatencyUs")
                own = (f"{percentile(own, 0.5) / 1000:.2f} / {percentile(own, 0.99) / 1000:.2f}"
                       if own else "–")
                print(f"| {case} | {name} | {i} | {r['rps']:,.0f} | {r['p50']:.2f} | {r['p99']:.2f} | "
                      f"{r['p99.9']:.2f} | {r['max']:.2f} | {machine['slowPercent']:.1f} % "
                      f"({machine['slowWindows']}) | {untouched['requests']:,} | "
                      f"{optional_ms(untouched['p99'])} | {optional_ms(untouched['p99.9'])} | {own} |")
    probes = {r["machine"]["probe"] for result in results.values()
              for key, runs in result["runs"].items() if key[1] == "rate" for r in runs}
    if probes != {"fifo"}:
        print("\n(The probe could not run at real-time priority: run as root or with CAP_SYS_NICE; its "
              "slow windows then include its own waits.)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
