#!/usr/bin/env python3
"""Two stsguard builds side by side: maximum throughput and CPU per review over HTTP/1.1 (oha, 16
keep-alive connections), for each review of bench/load.py, in alternating rounds.

    python3 bench/ab.py FIRST SECOND [--rounds 3] [--duration 5]

FIRST runs first in every round; run it again with the two swapped to see how much the order
alone moves the figures on this machine. Prints, per case and build, every round's reviews/s
and CPU µs/review, sorted. Needs oha on PATH and target/release/stsguard (for the certificates).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("first", type=Path, help="stsguard binary that runs first in each round")
    parser.add_argument("second", type=Path, help="stsguard binary that runs second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stsguard-ab-"))
    certs = work / "certs"
    subprocess.run([load.ROOT / "target" / "release" / "stsguard", "certs", "generate", "--out", certs,
                    "--dns", "localhost", "--ip", "127.0.0.1"], check=True, stdout=subprocess.DEVNULL)
    servers = {}
    for label, binary in (("first", args.first), ("second", args.second)):
        port, probe = load.free_port(), load.free_port()
        argv = [str(binary), "serve", "--no-cluster", "--addr", f"127.0.0.1:{port}",
                "--probe-addr", f"127.0.0.1:{probe}", "--tls-cert", str(certs / "tls.crt"),
                "--tls-key", str(certs / "tls.key"), "--log-format", "json"]
        servers[f"{label} ({binary})"] = load.Server(label, argv, port, probe, work / f"{label}.log")
    http1 = load.PROTOCOLS[0][1]
    for case, path, fixture in load.CASES:
        runs: dict[str, list[tuple[int, int]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                result = load.oha(server, certs / "ca.crt", path, load.FIXTURES / fixture, http1,
                                  ["-z", f"{args.duration}s"])
                runs[name].append((round(result["summary"]["requestsPerSec"]),
                                   round(result["cpuMicrosPerReview"])))
        for name, samples in runs.items():
            print(f"{case}, HTTP/1.1, {name}: reviews/s and CPU µs/review {sorted(samples)}", flush=True)
    for server in servers.values():
        server.stop()


if __name__ == "__main__":
    main()
