#!/usr/bin/env python3
"""Seconds per image for `palisade scan`: a generated image as a tarball and from a local registry.

    python3 bench/scan_image.py                   # PALISADE=target/release/palisade, ROUNDS=3

The image (seeded, so every run scans the same bytes): a Debian-like base layer (os-release, a
dpkg status of 400 packages, 3,000 small files), a Node layer (2,000 packages in node_modules), a
Python layer (500 dist-info directories), a Java layer (20 JARs with pom.properties) and a layer with a
64 MiB executable carrying Go build information at its end. Written as an OCI layout, packed as a
tarball, and pushed with skopeo to Debian's docker-registry on 127.0.0.1 (plain HTTP, `--insecure`)
when both are installed. Trivy and Grype are not available from the registries this machine reaches
(no Debian package, PyPI or npm release), so no peer runs beside it; checkov does not read images.
"""
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "scan-image"
PALISADE = os.environ.get("PALISADE", str(ROOT / "target" / "release" / "palisade"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))


def tar_bytes(files):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def go_buildinfo(version, modinfo):
    def varint(n):
        out = bytearray()
        while True:
            byte = n & 0x7F
            n >>= 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    start = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
    end = bytes.fromhex("f932433186182072008242104116d8f2")
    header = b"\xff Go buildinf:" + bytes([8, 2]) + bytes(16)
    info = start + modinfo.encode() + end
    return header + varint(len(version)) + version.encode() + varint(len(info)) + info


def layers():
    random.seed(7)
    base = [("etc/os-release", b'ID=debian\nVERSION_ID="12"\n', 0o644)]
    status = "".join(
        f"Package: pkg{i}\nStatus: install ok installed\nVersion: 1.{i}-1\n\n" for i in range(400))
    base.append(("var/lib/dpkg/status", status.encode(), 0o644))
    base += [(f"usr/share/doc/pkg{i}/copyright", os.urandom(2048), 0o644) for i in range(3000)]
    node = [(f"srv/app/node_modules/mod{i}/package.json",
             json.dumps({"name": f"mod{i}", "version": f"1.{i % 50}.0", "license": "MIT"}).encode(), 0o644)
            for i in range(2000)]
    node += [(f"srv/app/node_modules/mod{i}/index.js", b"module.exports = 1;\n" * 50, 0o644) for i in range(2000)]
    python = [(f"usr/lib/python3/dist-packages/dist{i}-2.{i % 30}.dist-info/METADATA",
               f"Metadata-Version: 2.1\nName: dist{i}\nVersion: 2.{i % 30}\n".encode(), 0o644) for i in range(500)]
    java = []
    for i in range(20):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr(f"META-INF/maven/com.example/lib{i}/pom.properties",
                       f"groupId=com.example\nartifactId=lib{i}\nversion=1.{i}\n")
            z.writestr("payload.bin", os.urandom(256 * 1024))
        java.append((f"opt/app/lib/lib{i}.jar", buffer.getvalue(), 0o644))
    binary = b"\x7fELF\x02\x01\x01" + os.urandom(64 * 1024 * 1024) + go_buildinfo(
        "go1.21.5", "path\texample.com/app\nmod\texample.com/app\t(devel)\t\ndep\tgolang.org/x/net\tv0.17.0\th1:x=\n")
    go = [("usr/local/bin/app", binary, 0o755)]
    return [tar_bytes(base), gzip.compress(tar_bytes(node), 1), tar_bytes(python), tar_bytes(java), gzip.compress(tar_bytes(go), 1)]


def write_layout(directory):
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "blobs" / "sha256").mkdir(parents=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def blob(data):
        digest = hashlib.sha256(data).hexdigest()
        (directory / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    descriptors = []
    for data in layers():
        digest, size = blob(data)
        media = "application/vnd.oci.image.layer.v1.tar+gzip" if data[:2] == b"\x1f\x8b" else "application/vnd.oci.image.layer.v1.tar"
        descriptors.append({"mediaType": media, "digest": digest, "size": size})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"User": "10001"},
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest, config_size = blob(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
                           "layers": descriptors}).encode()
    manifest_digest, manifest_size = blob(manifest)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
         "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}))
    return sum(d["size"] for d in descriptors)


def timed(args):
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode not in (0, 1):
        sys.exit(f"{args}: exit {result.returncode}: {result.stderr}")
    return elapsed, json.loads(result.stdout)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    layout = OUT / "layout"
    size = write_layout(layout)
    tarball = OUT / "image.tar"
    with tarfile.open(tarball, "w") as tar:
        for path in sorted(layout.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(layout)), recursive=False)
    common = ["--format", "json", "--fail-on", "never", "--skip", "vulnerabilities"]
    print(f"image: {size / 1e6:.0f} MB of layers; palisade: {PALISADE}")
    rows = {}
    for _ in range(ROUNDS):
        elapsed, report = timed([PALISADE, "scan", str(tarball)] + common)
        rows.setdefault("tarball", []).append(elapsed)
    print(f"tarball: median {statistics.median(rows['tarball']):.2f} s over {ROUNDS} runs "
          f"({', '.join(f'{t:.2f}' for t in rows['tarball'])}); {report['summary']}")
    if shutil.which("docker-registry") and shutil.which("skopeo"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        storage = OUT / "registry"
        shutil.rmtree(storage, ignore_errors=True)
        config = OUT / "registry.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n")
        registry = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(400):
                try:
                    socket.create_connection(("127.0.0.1", port), 0.1).close()
                    break
                except OSError:
                    time.sleep(0.025)
            reference = f"127.0.0.1:{port}/bench/app:1"
            subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                            f"oci:{layout}:bench", f"docker://{reference}"], check=True)
            for _ in range(ROUNDS):
                elapsed, report = timed([PALISADE, "scan", reference, "--insecure", f"127.0.0.1:{port}"] + common)
                rows.setdefault("registry", []).append(elapsed)
            print(f"registry (127.0.0.1, plain HTTP): median {statistics.median(rows['registry']):.2f} s over {ROUNDS} runs "
                  f"({', '.join(f'{t:.2f}' for t in rows['registry'])}); {report['summary']}")
        finally:
            registry.kill()
    else:
        print("registry: skipped (docker-registry and skopeo not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
