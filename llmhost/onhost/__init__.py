"""Code that runs on the hosts: standard library only, shipped as one file.

Hosts have python3 and nothing else llmhost could rely on, so nothing here may
import a third-party package or a control-side llmhost module (a test imports
every module with ``python3 -I -S`` from the shipped file to keep it so). The
roles build the package into ``/usr/local/lib/llmhost/onhost.pyz`` (a zipapp,
see ``roles._common.onhost``) and run its tools there:

    python3 /usr/local/lib/llmhost/onhost.pyz pull ...        the model puller
    python3 /usr/local/lib/llmhost/onhost.pyz runtimectl ...  readiness, drain, cutover
    python3 /usr/local/lib/llmhost/onhost.pyz soak ...        the gate's load
    python3 /usr/local/lib/llmhost/onhost.pyz eval-drift ...  the production eval (timer)

``layout`` holds what the host side and the control side must agree on (paths,
file names, the empty state, what "materialised" means); the roles import those
values from it and never restate them.
"""
