"""What the roles share, so that no role reaches into another for it.

- ``onhost``: the host-side tools (``llmhost/onhost``) built into one zipapp,
  installed once per host per run, and the command line that runs a tool;
- ``checks``: preflight checks of single values, and the host-tagged re-raise of a
  catalog or secrets error;
- ``ports``: every TCP port a host uses, by the key that sets it, checked once;
- ``operations``: firewall drop-ins, waiting for a listener, uploading secrets;
- ``facts``: the host's state file, which the runtime, gate and gateway all read.

Paths and names that the host-side tools must agree on live in
``llmhost.onhost.layout``, not here.
"""
