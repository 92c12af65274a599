#!/usr/bin/env python3
"""Authentication benchmark: the same JWT-protected route (RS256 and ES256) and an unprotected one,
on Palisade and on HAProxy's jwt_verify, plus the echo upstream directly. Keys and tokens are made
fresh by `palisade token`; the RS256 key is the test fixture. Interleaved rounds, medians.

    bash bench/run.sh auth        # or: python3 bench/auth.py after a release build
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import drive  # noqa: E402

ROOT, OUT, BIN = drive.ROOT, drive.OUT, drive.BIN
CONNECTIONS = int(os.environ.get("AUTH_CONNECTIONS", "64"))
# IDENTITY=off sends no identity headers upstream (the echo reflects every header it gets, so the
# default four headers also make each response ~300 bytes longer): this isolates authentication itself.
IDENTITY_OFF = os.environ.get("IDENTITY", "on") == "off"
IDENTITY_SETTINGS = "  identity: { headers: {} }" if IDENTITY_OFF else ""


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout


def prepare():
    os.makedirs(OUT, exist_ok=True)
    rsa_key = os.path.join(ROOT, "crates/palisade-gateway/tests/fixtures/test-rsa-key.pem")
    ec_key = os.path.join(OUT, "ec-key.pem")
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ec_key)
    sh("openssl", "pkey", "-in", ec_key, "-pubout", "-out", os.path.join(OUT, "ec-public.pem"))
    sh("openssl", "pkey", "-in", rsa_key, "-pubout", "-out", os.path.join(OUT, "rsa-public.pem"))
    tokens = {}
    for name, key in (("rsa", rsa_key), ("ec", ec_key)):
        with open(os.path.join(OUT, f"{name}-jwks.json"), "w") as f:
            f.write(sh(BIN, "token", "--key", key, "--jwks"))
        tokens[name] = sh(BIN, "token", "--key", key, "--iss", "https://idp.bench", "--aud", "bench-api", "--sub", "bench",
                          "--scope", "orders:read", "--ttl", "2h").strip()
    for template in ("palisade-auth.yaml", "haproxy-auth.cfg"):
        with open(os.path.join(ROOT, "bench", template + ".in")) as f:
            text = f.read().replace("@OUT@", OUT).replace("@IDENTITY@", IDENTITY_SETTINGS)
        with open(os.path.join(OUT, template), "w") as f:
            f.write(text)
    return tokens


def wrk(port, path, token, script=None):
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{drive.DURATION}s", "--latency"]
    if script:
        command += ["-s", script]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    output = subprocess.run(command + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output:
        raise SystemExit(f"non-2xx answers on {port}{path}: the token was refused\n{output}")
    rps = float(drive.re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = drive.to_ms(drive.re.search(r"\s50%\s+([\d.]+\w+)", output).group(1))
    p99 = drive.to_ms(drive.re.search(r"\s99%\s+([\d.]+\w+)", output).group(1))
    return rps, p50, p99


def main():
    tokens = prepare()
    cases = {
        # The unprotected routes get the same Authorization header (unchecked), so that every case
        # carries the same bytes and the ratio measures authentication alone.
        "direct": (19000, "/open/item", tokens["rsa"]),
        "palisade public": (19080, "/open/item", tokens["rsa"]),
        "palisade RS256": (19080, "/rs/item", tokens["rsa"]),
        "palisade ES256": (19080, "/es/item", tokens["ec"]),
        "haproxy public": (19083, "/open/item", tokens["rsa"]),
        "haproxy RS256": (19083, "/rs/item", tokens["rsa"]),
        "haproxy ES256": (19083, "/es/item", tokens["ec"]),
    }
    log = lambda name: open(os.path.join(OUT, f"{name}.log"), "w")
    processes = {}
    try:
        processes["echo"] = subprocess.Popen([BIN, "echo", "--listen", "127.0.0.1:19000"], stdout=log("echo"), stderr=subprocess.STDOUT)
        processes["palisade"] = subprocess.Popen([BIN, "gateway", "--config", os.path.join(OUT, "palisade-auth.yaml")],
                                                 stdout=log("palisade-auth"), stderr=subprocess.STDOUT)
        processes["haproxy"] = subprocess.Popen(["haproxy", "-f", os.path.join(OUT, "haproxy-auth.cfg")], stdout=log("haproxy-auth"),
                                                stderr=subprocess.STDOUT)
        for port in (19000, 19080, 19083):
            drive.wait_for_port(port)
        time.sleep(1)
        for port, path, token in cases.values():  # warm-up, and proof that every token is accepted
            wrk(port, path, token)
        results = {}
        names = list(cases)
        for round_number in range(drive.ROUNDS):
            shift = round_number % len(names)
            for name in names[shift:] + names[:shift]:
                results.setdefault(name, []).append(wrk(*cases[name]))
                print(f"round {round_number + 1} {name}: {results[name][-1]}", file=sys.stderr)
    finally:
        drive.stop(processes)
    median = lambda name, i: statistics.median(r[i] for r in results[name])
    lines = [
        f"Machine: {drive.machine()}; load generator on the same machine. wrk -t2 -c{CONNECTIONS}, {drive.DURATION} s per run, "
        f"{drive.ROUNDS} rounds interleaved, medians. Identity headers to the upstream: {'none' if IDENTITY_OFF else 'the default four'}. Every request carries the same RS256 or ES256 bearer token; public routes do not check it. One token per route: Palisade's verified-token cache answers after the first request, HAProxy verifies every time.",
        "",
        "| target | req/s | p50 ms | p99 ms | ÷ same proxy's public route |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        proxy = name.split()[0]
        base = f"{proxy} public" if proxy != "direct" else "direct"
        lines.append(f"| {name} | {median(name, 0):,.0f} | {median(name, 1):.3f} | {median(name, 2):.3f} | "
                     f"{median(name, 0) / median(base, 0):.2f} |")
    drive.write_report("auth-report.md", lines)


if __name__ == "__main__":
    main()
