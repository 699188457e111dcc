"""Network namespaces for the tests: the test's own hosts, joined to this
machine by a veth pair, with addresses from 198.18.0.0/15 (RFC 2544's
benchmarking range), created and removed by the test."""
import os
import subprocess

IP = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "ip"


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


class Netns:
    """A network namespace joined to the host by a veth pair, with
    addresses from 198.18.0.0/15 (RFC 2544's benchmarking range): the
    test's own network, created and removed by the test."""

    def __init__(self):
        # A /30 of 198.18.0.0/15 from the pid, so that tests running at the
        # same time never share a subnet.
        base = (os.getpid() % 32000) * 4
        self.name = "lwsit%d" % os.getpid()
        self.host_if = "lwh%d" % os.getpid()
        self.ns_if = "lwn%d" % os.getpid()
        self.host_ip = "198.%d.%d.%d" % (18 + base // 65536, base // 256 % 256, base % 256 + 1)
        self.ns_ip = "198.%d.%d.%d" % (18 + base // 65536, base // 256 % 256, base % 256 + 2)

    def __enter__(self):
        sh(IP, "netns", "add", self.name)
        try:
            sh(IP, "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
               "netns", self.name)
            sh(IP, "addr", "add", self.host_ip + "/30", "dev", self.host_if)
            sh(IP, "link", "set", self.host_if, "up")
            sh(IP, "-n", self.name, "addr", "add", self.ns_ip + "/30", "dev", self.ns_if)
            sh(IP, "-n", self.name, "link", "set", self.ns_if, "up")
            sh(IP, "-n", self.name, "link", "set", "lo", "up")
        except Exception:
            self.__exit__()
            raise
        return self

    def partition(self):
        """Drops the link: no FIN, no RST, just silence, as a dead switch."""
        sh(IP, "link", "set", self.host_if, "down")

    def __exit__(self, *exc):
        sh(IP, "link", "del", self.host_if, check=False)
        sh(IP, "netns", "del", self.name, check=False)


def netns_available():
    if not os.path.exists("/usr/sbin/ip") and subprocess.run(
            ["which", "ip"], stdout=subprocess.DEVNULL).returncode != 0:
        return False
    r = sh(IP, "netns", "add", "lwsitprobe%d" % os.getpid(), check=False)
    if r.returncode != 0:
        return False
    sh(IP, "netns", "del", "lwsitprobe%d" % os.getpid(), check=False)
    return True
