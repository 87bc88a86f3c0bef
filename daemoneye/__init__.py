"""DaemonEye: a security-focused process monitor for Linux."""

__version__ = "0.1.0"
