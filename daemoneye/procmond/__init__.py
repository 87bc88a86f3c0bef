"""procmond: the collector process (docs/protocol.md, "The collector pair")."""
