"""Inventory of the local testbed: the hosts `llmhost testbed up` booted.

It reads the testbed's state rather than being generated, so it is always in
step with what is running. With no testbed up it fails with the fix instead of
resolving to no hosts (which pyinfra would run as a silent no-op).

    llmhost testbed up --hosts 2
    pyinfra inventories/testbed.py deploy/site.py
"""

from llmhost.errors import ConfigError
from llmhost.testing.testbed import Testbed

_testbed = Testbed()
_hosts = _testbed.hosts()
if not _hosts:
    raise ConfigError(
        f"no testbed hosts are up (state: {_testbed.state_file})",
        key=None,
        fix="run `llmhost testbed up --hosts 2` first",
    )

testbed = [(host.name, _testbed.inventory_data(host)) for host in _hosts]
# The first host keeps the primary model registry, the second its disaster-recovery copy.
registry = testbed[:2]
# The first also runs Prometheus and Alertmanager, watching every host.
monitoring = testbed[:1]
