"""A testbed of real Debian 12 hosts on this machine, for converging roles over SSH.

Each host is a Debian tree (an overlay on one cached image) booted with
systemd as PID 1 by systemd-nspawn, in its own network namespace reached over a
veth pair. Beside each host the testbed runs what a regulated network would
offer it: an egress proxy (tinyproxy) to the package registries and an NTP
server (chronyd, serving this machine's clock without ever setting it).
"""

from llmhost.testing.testbed.testbed import Testbed, TestbedError, TestbedHost, default_root

__all__ = ["Testbed", "TestbedError", "TestbedHost", "default_root"]
