"""DaemonEye dashboard themes, one TOML file each (package data, shipped in the wheel)."""
