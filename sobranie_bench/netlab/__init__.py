"""The network lab: the server in one network namespace, the harness in another, and a link
between them that has a round-trip time, jitter, loss (with bursts) and a bandwidth per
direction (:mod:`.profiles`). See docs/network.md."""
