"""Test doubles for the remediator: a small service, a systemctl, a Docker Engine, a harness."""
