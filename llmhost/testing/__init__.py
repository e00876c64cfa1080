"""Test support, not production code: what the tests, benches and `llmhost demo` stand on.

- ``testbed``: real Debian 12 hosts on this machine (systemd-nspawn, network
  namespaces, SSH), behind `llmhost testbed up/down/status/ssh`;
- ``testmodels``: tiny seeded random-weight models (GGUF, safetensors) whose
  hashes are the same on every run;
- ``fakehub``: a local stand-in for the Hugging Face hub's file endpoints.

Nothing under ``roles/`` or ``deploy/`` imports from here.
"""
