"""A real dnsmasq for the group tests, serving names from a hosts folder.

dnsmasq watches --hostsdir with inotify and re-reads it when a file appears
or changes (dnsmasq(8), --hostsdir), so a test makes a record "appear late"
by writing a file, without signals or restarts.
"""
import os
import shutil
import signal
import subprocess
import tempfile
import time

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


class Dns:
    def __init__(self, listen="127.0.0.1", port=0, domain="svc.lwsi.test"):
        self.listen = listen
        self.port = port or _free_udp_port(listen)
        self.domain = domain
        self.dir = tempfile.mkdtemp(prefix="lwsi-dns-")
        self.hosts = os.path.join(self.dir, "hosts.d")
        os.mkdir(self.hosts)
        self.log = os.path.join(self.dir, "dnsmasq.log")
        self.proc = None

    def start(self, deadline=5.0):
        """Starts dnsmasq and waits until it answers a query. The free port
        was free when picked, but anything may take it before dnsmasq binds
        it (a resolver's random source port): then dnsmasq exits and we try
        another port."""
        for attempt in range(5):
            if attempt:
                self.port = _free_udp_port(self.listen)
            if self._start_once(deadline):
                return self
        raise RuntimeError("dnsmasq did not start: %s" % self._stderr())

    def _stderr(self):
        try:
            return self.proc.stderr.read().decode(errors="replace")
        except Exception:
            return ""

    def _start_once(self, deadline):
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                "--no-daemon", "--bind-interfaces", f"--listen-address={self.listen}",
                f"--port={self.port}", f"--hostsdir={self.hosts}", "--local-ttl=0",
                f"--local=/{self.domain}/", "--neg-ttl=0", "--no-negcache",
                "--log-facility=" + self.log,
                "--user=root", "--pid-file=" + os.path.join(self.dir, "pid")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                return False
            if _answers(self.listen, self.port, "probe." + self.domain):
                return True
            time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        return False

    def fqdn(self, name):
        return f"{name}.{self.domain}"

    def add(self, name, ip):
        """Adds name (relative to the domain) -> ip, atomically."""
        path = os.path.join(self.hosts, name.replace("/", "_"))
        tmp = os.path.join(self.dir, "tmp-" + name)
        with open(tmp, "w") as f:
            f.write(f"{ip} {self.fqdn(name)}\n")
        os.rename(tmp, path)

    def remove(self, name):
        try:
            os.unlink(os.path.join(self.hosts, name.replace("/", "_")))
        except FileNotFoundError:
            pass

    def resolv_conf(self, ndots=5):
        """A resolv.conf as a pod has one: a search list and ndots:5."""
        path = os.path.join(self.dir, "resolv.conf")
        with open(path, "w") as f:
            f.write(f"nameserver {self.listen}\n")
            f.write(f"search default.{self.domain} {self.domain}\n")
            f.write(f"options ndots:{ndots}\n")
        return path

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def _free_udp_port(host):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _answers(host, port, name):
    """Whether a DNS server on host:port answers a query for name."""
    import socket
    q = (b"\x4c\x57\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
         + b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
         + b"\x00\x00\x01\x00\x01")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(q, (host, port))
            r = s.recv(512)
        except OSError:
            return False
    return len(r) >= 12 and r[:2] == b"\x4c\x57"


def _udp_port_bound(host, port):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
