"""Converge the NVIDIA driver stack alone (hosts already converged by site.py).

    pyinfra inventories/<env>.py deploy/nvidia.py

For a driver release change (`nvidia_driver_version`) rolled out on its own, group by
group, and for the GPU tests on a machine that has one; a host without GPUs is a noop.
"""

from roles.nvidia import nvidia

nvidia()
