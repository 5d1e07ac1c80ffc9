"""dnsd's UDP throughput with response rate limiting off, on but not
triggered, and what a flooding address gets; dnsperf against 127.0.0.1
only, each run bounded by DUR seconds, each server stopped by PID.

    DNSD=target/debug/dnsd DUR=5 ROUNDS=3 python3 scripts/bench-dns-rrl.py

Needs dnsperf (Debian package). Prints every command and the medians."""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DNSD = os.environ.get("DNSD", os.path.join(ROOT, "target", "debug", "dnsd"))
DUR = int(os.environ.get("DUR", "5"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CLIENTS = os.environ.get("CLIENTS", "4")
ZONE = os.path.join(ROOT, "bins", "dnsd", "zones", "csuvnetwork.com.zone")
WORK = tempfile.mkdtemp(prefix="bench-dns-rrl-")

# Names and types of the lab zone: answers, NODATA and NXDOMAIN mixed.
QUERIES = [
    ("csuvnetwork.com", "MX"), ("mail.csuvnetwork.com", "A"),
    ("csuvnetwork.com", "SOA"), ("csuvnetwork.com", "NS"),
    ("dnsserver.csuvnetwork.com", "A"), ("mail.csuvnetwork.com", "AAAA"),
    ("nosuch.csuvnetwork.com", "A"), ("www.csuvnetwork.com", "A"),
]

VARIANTS = {
    # RRL off.
    "off": "rrl_responses_per_second = 0\n",
    # On, nobody exempt, a limit no client reaches: every answer goes
    # through classification, hashing and the table.
    "on-not-triggered": "rrl_responses_per_second = 100000000\nrrl_exempt_clients = []\n",
    # The default: on, the loopback client exempt.
    "default-exempt": "",
}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(extra):
    port = free_port()
    cfg = os.path.join(WORK, "mail.toml")
    with open(cfg, "w") as f:
        f.write(f'[dnsd]\nlisten = ["127.0.0.1:{port}"]\nworkers = 2\n'
                f'zones = [{{ origin = "csuvnetwork.com", file = "{ZONE}" }}]\n' + extra)
    p = subprocess.Popen([DNSD, "--config", cfg], stdout=subprocess.DEVNULL,
                         stderr=open(os.path.join(WORK, "dnsd.log"), "ab"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    sys.exit("dnsd did not start")


def cpu_seconds(pid):
    """User + system CPU of a process so far (/proc/PID/stat fields 14, 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dnsperf(port, source="127.0.0.1", dur=DUR, qps=None, queries=QUERIES):
    return dnsperf_wait(dnsperf_start(port, source, dur, qps, queries), dur)


def dnsperf_start(port, source="127.0.0.1", dur=DUR, qps=None, queries=QUERIES):
    qfile = os.path.join(WORK, f"queries-{source}.txt")
    with open(qfile, "w") as f:
        f.writelines(f"{n} {t}\n" for n, t in queries)
    cmd = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-a", source,
           "-d", qfile, "-l", str(dur), "-c", CLIENTS, "-t", "1"]
    if qps:
        # Enough outstanding queries that lost ones do not slow the sender.
        cmd += ["-Q", str(qps), "-q", str(qps * 2)]
    print("$", " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def dnsperf_wait(proc, dur=DUR):
    out = proc.communicate(timeout=dur + 30)[0]
    get = lambda pat: float(re.search(pat, out).group(1))
    return {
        "qps": get(r"Queries per second:\s+([\d.]+)"),
        "sent": get(r"Queries sent:\s+(\d+)"),
        "completed": get(r"Queries completed:\s+(\d+)"),
        "lost": get(r"Queries lost:\s+(\d+)"),
        "req_size": get(r"Average packet size:\s+request (\d+)"),
        "resp_size": get(r"Average packet size:\s+request \d+, response (\d+)"),
    }


def main():
    results = {k: [] for k in VARIANTS}
    cpu = {k: [] for k in VARIANTS}
    # Load from other users of the machine should fall on every variant
    # alike.
    names = list(VARIANTS)
    for rnd in range(ROUNDS):
        # Interleaved, and in a rotating order so that no variant always
        # runs right after another's server stopped.
        for name in names[rnd % len(names):] + names[:rnd % len(names)]:
            extra = VARIANTS[name]
            p, port = start(extra)
            try:
                before = cpu_seconds(p.pid)
                r = dnsperf(port)
                us = (cpu_seconds(p.pid) - before) / max(r["completed"], 1) * 1e6
            finally:
                p.terminate()
                p.wait(timeout=10)
            print(f"  {name}: {r['qps']:.0f} qps, {us:.2f} us server CPU per query", flush=True)
            results[name].append(r["qps"])
            cpu[name].append(us)
    print("\nmedians over", ROUNDS, "rounds of", DUR, "s (the machine's other load moves qps;")
    print("server CPU per query is the steadier figure):")
    base = statistics.median(results["off"])
    base_cpu = statistics.median(cpu["off"])
    for name, v in results.items():
        m = statistics.median(v)
        c = statistics.median(cpu[name])
        print(f"  {name:18} {m:10.0f} qps ({m / base * 100:5.1f} % of off)"
              f"  {c:6.2f} us CPU/query ({c / base_cpu * 100:5.1f} % of off)")

    # An attacker (or a victim's spoofed address) at 1,000 qps from
    # 127.0.0.2 for the lab's largest answer, RRL off and at the defaults
    # (20/s, slip 2) with nobody exempt.
    for name, extra in [("off", "rrl_responses_per_second = 0\n"),
                        ("default", "rrl_exempt_clients = []\n")]:
        p, port = start(extra)
        try:
            r = dnsperf(port, source="127.0.0.2", qps=1000,
                        queries=[("csuvnetwork.com", "MX")])
        finally:
            p.terminate()
            p.wait(timeout=10)
        sent_bytes = r["sent"] * r["req_size"]
        got_bytes = r["completed"] * r["resp_size"]
        print(f"  attacker 127.0.0.2, 1000 qps x {DUR} s, RRL {name}: sent {r['sent']:.0f}"
              f" x {r['req_size']:.0f} B,"
              f" answered {r['completed']:.0f} (full or TC, {r['resp_size']:.0f} B on average),"
              f" lost {r['lost']:.0f};"
              f" bytes out/in {got_bytes / max(sent_bytes, 1):.2f}", flush=True)
    # Three attacking networks at 1,000 qps each and one real client from
    # a fourth at 5 qps, at once.
    p, port = start("rrl_exempt_clients = []\n")
    try:
        attackers = {a: dnsperf_start(port, source=a, qps=1000, queries=[("csuvnetwork.com", "MX")])
                     for a in ("127.0.0.2", "127.0.2.2", "127.0.3.2")}
        legit = dnsperf_start(port, source="127.0.1.1", qps=5,
                              queries=[("csuvnetwork.com", "MX"), ("mail.csuvnetwork.com", "A")])
        results = {a: dnsperf_wait(d) for a, d in attackers.items()}
        results["127.0.1.1 (real client)"] = dnsperf_wait(legit)
    finally:
        p.terminate()
        p.wait(timeout=10)
    for a, r in results.items():
        print(f"  {a}: sent {r['sent']:.0f}, answered {r['completed']:.0f}, lost {r['lost']:.0f},"
              f" bytes out/in {r['completed'] * r['resp_size'] / max(r['sent'] * r['req_size'], 1):.2f}")
    with open(os.path.join(WORK, "dnsd.log")) as f:
        print("  log:", [l.strip() for l in f if "rate limit" in l][-3:])

if __name__ == "__main__":
    try:
        main()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
