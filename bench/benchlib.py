"""Helpers the fault and memory benchmarks share (bench/faults.py, stalled_h2.py, reload_memory.py)."""
import os
import socket
import time


def free(port):
    """Whether nothing accepts on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return False
    except OSError:
        return True


def wait_for_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while free(port):
        if time.time() > deadline:
            raise SystemExit(f"nothing listens on port {port}")
        time.sleep(0.05)


def rss_kib(*pids):
    """Resident memory of the processes, summed."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(text)
    return path
