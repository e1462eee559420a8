#!/usr/bin/env python3
"""Soak: stsguard under a steady mixed load for a long time; zero errors and flat memory.

    python3 bench/soak.py [--minutes 10] [--rate 1000]

Starts the release `stsguard serve` (no cluster, default policy, info logging to a file) with a
generated certificate, and runs oha at a fixed total rate over keep-alive TLS against a mix of
captured reviews (StatefulSet validate and mutate, Service validate, a denied review, a scale
subresource), one oha per review, in parallel. Samples the server's resident memory every 10 s.
Fails (exit 1) on any non-200 answer or transport error, or when memory in the last fifth of the
run is more than 10 % above the first fifth's. Needs oha on PATH (cargo install oha).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import FIXTURES, ROOT, Server, free_port, memory_kib  # noqa: E402

MIX = [
    ("/validate", "validate-StatefulSet-CREATE-cap-web-1.json", 0.35),
    ("/mutate", "mutate-StatefulSet-CREATE-cap-db-1.json", 0.25),
    ("/validate", "validate-Service-CREATE-cap-cache-1.json", 0.2),
    ("/validate", "validate-StatefulSet-CREATE-cap-nosvc-1.json", 0.1),
    ("/validate", "validate-Scale-UPDATE-cap-web-scale-1.json", 0.1),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=int, default=1000, help="total reviews/s")
    args = parser.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha not found: cargo install oha")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "stsguard"], cwd=ROOT, check=True)
    binary = ROOT / "target" / "release" / "stsguard"
    work = Path(tempfile.mkdtemp(prefix="stsguard-soak-"))
    certs = work / "certs"
    subprocess.run([binary, "certs", "generate", "--out", certs, "--dns", "localhost"], check=True,
                   stdout=subprocess.DEVNULL)
    port, probe = free_port(), free_port()
    server = Server("stsguard", [str(binary), "serve", "--no-cluster", "--addr", f"127.0.0.1:{port}",
                                 "--probe-addr", f"127.0.0.1:{probe}", "--tls-cert", str(certs / "tls.crt"),
                                 "--tls-key", str(certs / "tls.key"), "--log-format", "json"],
                    port, probe, work / "stsguard.log")
    duration = int(args.minutes * 60)
    loads = []
    for path, fixture, share in MIX:
        rate = max(1, round(args.rate * share))
        argv = ["oha", "--no-tui", "--output-format", "json", "--cacert", str(certs / "ca.crt"),
                "-m", "POST", "-H", "content-type: application/json", "-D", str(FIXTURES / fixture),
                "-c", "4", "-q", str(rate), "-z", f"{duration}s", f"https://localhost:{port}{path}"]
        loads.append((fixture, subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)))

    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    while any(p.poll() is None for _, p in loads):
        samples.append((time.monotonic() - started, memory_kib(server.process.pid)[0]))
        time.sleep(10)
    peak = server.stop()

    failures = []
    total = 0
    print(f"# {args.minutes:g} minutes at {args.rate} reviews/s (mixed), keep-alive TLS, HTTP/1.1\n")
    print("| review | answered | rps | p50 ms | p99 ms | p99.9 ms | non-200 / errors |")
    print("|---|---|---|---|---|---|---|")
    for fixture, process in loads:
        result = json.loads(process.stdout.read())
        codes = result.get("statusCodeDistribution", {})
        answered = sum(codes.values())
        total += answered
        # oha cancels the requests still in flight when its duration ends; those are its own.
        errors = {e: n for e, n in result.get("errorDistribution", {}).items()
                  if e != "aborted due to deadline"}
        bad = answered - codes.get("200", 0) + sum(errors.values())
        if bad:
            failures.append(f"{fixture}: {codes} {errors}")
        p = result["latencyPercentiles"]
        print(f"| {fixture} | {answered:,} | {result['summary']['requestsPerSec']:,.0f} | "
              f"{p['p50'] * 1000:.2f} | {p['p99'] * 1000:.2f} | {p['p99.9'] * 1000:.2f} | {bad} |")
    fifth = max(1, len(samples) // 5)
    first = sum(m for _, m in samples[:fifth]) / fifth
    last = sum(m for _, m in samples[-fifth:]) / fifth
    print(f"\n{total:,} reviews. Resident memory: first fifth {first / 1024:.1f} MB, last fifth "
          f"{last / 1024:.1f} MB, peak {peak / 1024:.1f} MB; samples every 10 s:")
    print(" ".join(f"{m / 1024:.1f}" for _, m in samples))
    if last > first * 1.10:
        failures.append(f"memory grew: {first / 1024:.1f} MB -> {last / 1024:.1f} MB")
    shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("\nFAILED:\n" + "\n".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
