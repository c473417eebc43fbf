"""Reference servers: one hub, one thin adapter per transport (see docs/protocol.md)."""
