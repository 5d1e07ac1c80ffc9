"""Driver for scripts/bench-dns.sh (see there). Prints every command and
the medians/ratios; servers listen on 127.0.0.1 only and are stopped by PID."""
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

N = int(os.environ.get("N", "1000000"))
# Records of the DNSSEC-signed zone (before signing): signing a million
# takes minutes, and the query rates depend little on the zone's size.
SIGNED_N = int(os.environ.get("SIGNED_N", "100000"))
DUR = int(os.environ.get("DUR", "10"))
WORK = os.environ.get("WORK", "/tmp/bench-dns")
DNSD = os.environ["DNSD"]
# Which parts run: check (zone loading), plain (qps on the unsigned zone),
# dnssec (qps on the signed zone, DO on half), axfr (the N-record zone).
PARTS = set(os.environ.get("PARTS", "check,plain,dnssec,axfr").split(","))
ORIGIN = "bench.test"
os.makedirs(WORK, exist_ok=True)
ZONE = os.path.join(WORK, ORIGIN + ".zone")
QUERIES = os.path.join(WORK, "queries.txt")
SIGNED_DIR = os.path.join(WORK, "signed")
SIGNED = os.path.join(SIGNED_DIR, ORIGIN + ".signed")
SIGNED_QUERIES = os.path.join(WORK, "signed-queries.txt")


def gen_zone(path=ZONE, queries=QUERIES, n=N):
    """Mixed zone: A, AAAA, MX, TXT, CNAME, SRV in equal parts."""
    N = n
    with open(path, "w") as f:
        f.write("$TTL 3600\n$ORIGIN bench.test.\n@ IN SOA ns1 hostmaster ( 1 3600 900 604800 300 )\n"
                "  IN NS ns1\nns1 IN A 192.0.2.1\n")
        for i in range(N):
            k = i % 6
            if k == 0:
                f.write(f"h{i} IN A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
            elif k == 1:
                f.write(f"h{i} 300 IN AAAA 2001:db8::{i & 0xffff:x}\n")
            elif k == 2:
                f.write(f"h{i} IN MX 10 mail{i}.example.net.\n")
            elif k == 3:
                f.write(f"h{i} IN TXT \"v=spf1 ip4:10.0.0.{i & 255} -all\"\n")
            elif k == 4:
                f.write(f"h{i} IN CNAME h{i - 4}\n")
            else:
                f.write(f"_sip._tcp.h{i} IN SRV 10 5 5060 h{i - 5}\n")
    types = ["A", "AAAA", "MX", "TXT", "A", "SRV"]
    with open(queries, "w") as f:
        for j in range(200000):
            i = (j * 7919) % N
            k = i % 6
            name = f"_sip._tcp.h{i}" if k == 5 else f"h{i}"
            f.write(f"{name}.bench.test {types[k]}\n")
            if j % 10 == 0:
                f.write(f"nx{j}.bench.test A\n")


def sign_zone():
    """The SIGNED_N-record zone signed by BIND's dnssec-signzone (as
    tests/test_dns_dnssec.py signs): ECDSA P-256 KSK and ZSK, NSEC, so
    that NXDOMAIN answers with DO carry NSEC proofs (RFC 4035 3.1.3)."""
    stamp = os.path.join(SIGNED_DIR, "records")
    if os.path.exists(SIGNED) and os.path.exists(stamp) and open(stamp).read() == str(SIGNED_N):
        # Signing takes most of a short run; a zone signed by an earlier
        # run of the same size is as good.
        print(f"# reusing {SIGNED} ({SIGNED_N} records; delete it to sign anew)", flush=True)
        return
    shutil.rmtree(SIGNED_DIR, ignore_errors=True)
    os.makedirs(SIGNED_DIR)
    zone = os.path.join(SIGNED_DIR, "zone")
    gen_zone(zone, SIGNED_QUERIES, SIGNED_N)

    def run(*cmd):
        print("$", " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=SIGNED_DIR, check=True, capture_output=True, text=True).stdout.strip()
    ksk = run("dnssec-keygen", "-q", "-a", "ECDSAP256SHA256", "-f", "KSK", ORIGIN)
    zsk = run("dnssec-keygen", "-q", "-a", "ECDSAP256SHA256", ORIGIN)
    with open(zone, "a") as f:
        f.write(f"$INCLUDE {ksk}.key\n$INCLUDE {zsk}.key\n")
    t0 = time.monotonic()
    run("dnssec-signzone", "-q", "-n", "2", "-o", ORIGIN, "-f", SIGNED, "zone", ksk, zsk)
    print(f"# signed {SIGNED_N} records in {time.monotonic() - t0:.1f} s: "
          f"{os.path.getsize(SIGNED) / 1e6:.1f} MB", flush=True)
    with open(stamp, "w") as f:
        f.write(str(SIGNED_N))


def run_timed(cmd):
    """Wall seconds, CPU seconds (user+sys) and max RSS (KiB) of a command.
    CPU time is the figure compared: the machine is shared, wall time is noisy."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M"] + cmd, capture_output=True, text=True)
    last = out.stderr.strip().splitlines()[-1].split()
    return float(last[0]), float(last[1]) + float(last[2]), int(last[3]), out.returncode, out.stdout + out.stderr


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid):
    kids = {pid}
    changed = True
    while changed:
        changed = False
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) in kids:
                continue
            try:
                with open(f"/proc/{p}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid in kids:
                kids.add(int(p))
                changed = True
    return kids


def cpu_seconds(pid):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def wait_answer(port, timeout=300):
    """Until the server answers h0.bench.test A with data (zone loaded)."""
    q = bytes.fromhex("abcd01000001000000000000") + b"\x02h0\x05bench\x04test\x00\x00\x01\x00\x01"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                s.sendto(q, ("127.0.0.1", port))
                r = s.recv(512)
                if r[7] >= 1:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
    return False


def start(name, port, zone=ZONE):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log = open(os.path.join(d, "log"), "w")
    if name == "dnsd":
        # AXFR from loopback is allowed by default (axfr_allow).
        cmd = [DNSD, "--listen", f"127.0.0.1:{port}", "--zone", f"{ORIGIN}={zone}", "--workers", "2"]
    elif name == "knot":
        conf = os.path.join(d, "knot.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    listen: 127.0.0.1@{port}
    rundir: {d}
    udp-workers: 2
    tcp-workers: 2
    background-workers: 1
database:
    storage: {d}
template:
  - id: default
    storage: {d}
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
acl:
  - id: axfr
    address: 127.0.0.1
    action: transfer
zone:
  - domain: {ORIGIN}
    file: {zone}
    acl: axfr
log:
  - target: stderr
    any: warning
""")
        cmd = ["knotd", "-c", conf]
    else:
        conf = os.path.join(d, "nsd.conf")
        with open(conf, "w") as f:
            f.write(f"""server:
    ip-address: 127.0.0.1
    port: {port}
    server-count: 2
    username: ""
    chroot: ""
    zonesdir: "{WORK}"
    pidfile: "{d}/nsd.pid"
    database: ""
    xfrdfile: "{d}/xfrd.state"
    zonelistfile: "{d}/zone.list"
    logfile: "{d}/nsd.log"
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: {ORIGIN}
    zonefile: "{zone}"
""")
        cmd = ["nsd", "-d", "-c", conf]
    print("$", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    ok = wait_answer(port)
    load = time.monotonic() - t0
    if not ok:
        p.terminate()
        p.wait()
        raise SystemExit(f"{name} did not answer; see {d}/log")
    return p, load


def dnsperf_cmd(port, mode, clients, outstanding, queries=QUERIES, do=False):
    return (["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", queries, "-l", str(DUR),
             "-c", str(clients), "-q", str(outstanding), "-m", mode] + (["-D"] if do else []))


def dnsperf_parse(out):
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))
    done = int(re.search(r"Queries completed:\s+(\d+)", out).group(1))
    lost = int(re.search(r"Queries lost:\s+(\d+)", out).group(1))
    return qps, done, lost


def dnsperf(port, mode, clients, outstanding):
    cmd = dnsperf_cmd(port, mode, clients, outstanding)
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return (" ".join(cmd),) + dnsperf_parse(out)


def dnsperf_half_do(port, mode, clients, outstanding):
    """DO on half the queries: dnsperf's -D sets DO on all of a run's
    queries, so two runs go at once, each with half the clients and the
    same query file, one with -D and one without; their rates add up."""
    cmds = [dnsperf_cmd(port, mode, clients // 2, outstanding, SIGNED_QUERIES, do) for do in (True, False)]
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for c in cmds]
    res = [dnsperf_parse(p.communicate()[0]) for p in procs]
    return (" & ".join(" ".join(c) for c in cmds), sum(r[0] for r in res), sum(r[1] for r in res),
            sum(r[2] for r in res), res[0][0])


def axfr(port):
    """One AXFR of the zone by `dig +noall +stats`: dig receives and
    parses every message but prints only the totals (printing a million
    records would time dig's formatter, not the server; kdig has no such
    switch for transfers). Wall seconds and the records received."""
    cmd = ["dig", "-p", str(port), "@127.0.0.1", "axfr", ORIGIN + ".", "+noall", "+stats"]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    wall = time.monotonic() - t0
    m = re.search(r"XFR size: (\d+) records", out)
    return " ".join(cmd), wall, int(m.group(1)) if m else 0


def stop(p):
    p.terminate()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main():
    print(f"# generating {N} records in {ZONE}", flush=True)
    gen_zone()
    size = os.path.getsize(ZONE)
    print(f"# zone file: {size / 1e6:.1f} MB")
    if "check" in PARTS:
        check_part(size)
    if "plain" in PARTS:
        plain_part()
    if "dnssec" in PARTS:
        dnssec_part()
    if "axfr" in PARTS:
        axfr_part()


def check_part(size):
    # (1) Parse and check the zone file, 3 runs each, medians.
    checkers = {
        "dnsd --check": [DNSD, "--check", ZONE, ORIGIN],
        "kzonecheck": ["kzonecheck", "-o", ORIGIN + ".", ZONE],
        "nsd-checkzone": ["nsd-checkzone", ORIGIN, ZONE],
    }
    results = {}
    for name, cmd in checkers.items():
        if not shutil.which(cmd[0]):
            print(f"# {cmd[0]} not installed; skipped")
            continue
        runs = []
        for _ in range(3):
            wall, cpu, rss, rc, out = run_timed(cmd)
            if rc != 0:
                print(out[-2000:])
                raise SystemExit(f"{name} failed")
            runs.append((cpu, rss, wall))
        results[name] = (statistics.median(r[0] for r in runs), max(r[1] for r in runs), statistics.median(r[2] for r in runs))
        print(f"$ {' '.join(cmd)}\n  median CPU {results[name][0]:.3f} s (wall {results[name][2]:.3f} s), "
              f"max RSS {results[name][1] / 1024:.0f} MiB, {size / 1e6 / results[name][0]:.0f} MB/s", flush=True)
    base = results["dnsd --check"][0]
    for name, (t, _, _) in results.items():
        if name != "dnsd --check":
            print(f"  {name} takes {t / base:.2f}x the CPU time of dnsd --check")


def plain_part():
    # (2) qps and CPU per query; (3) memory after loading.
    table = []
    for name in ["dnsd", "knot", "nsd"]:
        port = free_port()
        p, load = start(name, port)
        try:
            # NSD keeps the zone in forked children: take the largest process.
            rss = max(rss_kib(x) for x in descendants(p.pid))
            row = {"server": name, "load_s": load, "rss_mib": rss / 1024}
            for label, mode, c, q in [("udp", "udp", 4, 500), ("tcp", "tcp", 16, 500), ("tcp1", "tcp", 1, 100)]:
                c0 = cpu_seconds(p.pid)
                cmd, qps, done, lost = dnsperf(port, mode, c, q)
                cpu = cpu_seconds(p.pid) - c0
                row[label] = (qps, cpu / max(done, 1) * 1e6, lost)
                print(f"$ {cmd}\n  {name} {label}: {qps:.0f} qps, {cpu / max(done, 1) * 1e6:.2f} us server CPU/query, lost {lost}", flush=True)
        finally:
            stop(p)
        table.append(row)
    print("\n| server | load s | RSS MiB | UDP qps | UDP us/q | TCP qps | TCP us/q | 1 TCP conn qps |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        print(f"| {r['server']} | {r['load_s']:.1f} | {r['rss_mib']:.0f} | {r['udp'][0]:.0f} | {r['udp'][1]:.2f} | "
              f"{r['tcp'][0]:.0f} | {r['tcp'][1]:.2f} | {r['tcp1'][0]:.0f} |")
    d = table[0]
    for r in table[1:]:
        print(f"dnsd/{r['server']}: UDP qps {d['udp'][0] / r['udp'][0]:.2f}x, UDP CPU/query "
              f"{d['udp'][1] / r['udp'][1]:.2f}x, TCP qps {d['tcp'][0] / r['tcp'][0]:.2f}x, "
              f"memory {d['rss_mib'] / r['rss_mib']:.2f}x")



def dnssec_part():
    """(4) The same signed zone served by each, UDP and TCP, DO on half
    the queries (see dnsperf_half_do)."""
    sign_zone()
    table = []
    for name in ["dnsd", "knot", "nsd"]:
        port = free_port()
        p, load = start(name, port, SIGNED)
        try:
            row = {"server": name}
            for label, mode, c, q in [("udp", "udp", 4, 500), ("tcp", "tcp", 16, 500)]:
                c0 = cpu_seconds(p.pid)
                cmd, qps, done, lost, qps_do = dnsperf_half_do(port, mode, c, q)
                cpu = cpu_seconds(p.pid) - c0
                row[label] = (qps, cpu / max(done, 1) * 1e6, lost)
                print(f"$ {cmd}\n  {name} signed {label}: {qps:.0f} qps ({qps_do:.0f} with DO), "
                      f"{cpu / max(done, 1) * 1e6:.2f} us server CPU/query, lost {lost}", flush=True)
        finally:
            stop(p)
        table.append(row)
    print("\n| server (signed zone, DO on half) | UDP qps | UDP us/q | TCP qps | TCP us/q |")
    print("|---|---|---|---|---|")
    for r in table:
        print(f"| {r['server']} | {r['udp'][0]:.0f} | {r['udp'][1]:.2f} | {r['tcp'][0]:.0f} | {r['tcp'][1]:.2f} |")
    d = table[0]
    for r in table[1:]:
        print(f"dnsd/{r['server']} signed: UDP qps {d['udp'][0] / r['udp'][0]:.2f}x, "
              f"TCP qps {d['tcp'][0] / r['tcp'][0]:.2f}x, UDP CPU/query {d['udp'][1] / r['udp'][1]:.2f}x")


def axfr_part():
    """(5) AXFR of the N-record zone from dnsd and from Knot (NSD's
    transfers need its xfrd; left out), 3 runs each, medians, with the
    server's CPU time per transfer."""
    res = {}
    for name in ["dnsd", "knot"]:
        port = free_port()
        p, _ = start(name, port)
        try:
            runs = []
            for _ in range(3):
                c0 = cpu_seconds(p.pid)
                cmd, wall, records = axfr(port)
                runs.append((wall, cpu_seconds(p.pid) - c0, records))
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            res[name] = (wall, cpu)
            print(f"$ {cmd}  (x3)\n  {name} AXFR: median {wall:.2f} s wall, {cpu:.2f} s server CPU, "
                  f"{runs[0][2]} records", flush=True)
        finally:
            stop(p)
    if "knot" in res:
        print(f"dnsd/knot AXFR wall {res['dnsd'][0] / res['knot'][0]:.2f}x, "
              f"server CPU {res['dnsd'][1] / max(res['knot'][1], 1e-9):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
