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
                raise RuntimeError("dnsmasq exited: %s" % self.proc.stderr.read().decode())
            if _udp_port_bound(self.listen, self.port):
                return self
            time.sleep(0.02)
        raise RuntimeError("dnsmasq did not start within %.1fs" % deadline)

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


def _udp_port_bound(host, port):
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
