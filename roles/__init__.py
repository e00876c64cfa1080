"""pyinfra packaged deploys, one per role: preflight -> install -> configure -> service."""
