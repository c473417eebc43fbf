"""Network profiles as data: what one emulated link between the harness and the server does.

Every figure is per direction unless named round-trip; ``source`` says where it comes from
(docs/network.md cites them in full). ``loopback`` is no lab at all: today's baseline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    """Name on the command line and in the results' ``network`` column."""
    rtt_ms: float
    """Round-trip time the link adds (half of it each way)."""
    jitter_ms: float
    """Each packet's one-way delay varies uniformly by up to this much (never reordered)."""
    loss: float
    """Fraction of packets dropped in each direction (0.01 = 1 %)."""
    burst: float
    """Mean length of a loss burst, in packets (1 = independent losses; Gilbert-Elliott)."""
    down_mbit: float
    """Bandwidth server -> client, Mbit/s (0 = not limited)."""
    up_mbit: float
    """Bandwidth client -> server, Mbit/s (0 = not limited)."""
    source: str
    """Where these figures come from."""
    queue_ms: float = 200.0
    """How much a full bottleneck buffers before it drops (tail drop), in milliseconds of
    its bandwidth."""

    @property
    def emulated(self) -> bool:
        """Whether the run needs the lab (loopback does not)."""
        return self.name != "loopback"


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("loopback", 0.0, 0.0, 0.0, 1.0, 0.0, 0.0,
            "no emulation: server and harness on 127.0.0.1 (the baseline)"),
    Profile("lan", 1.0, 0.1, 0.0, 1.0, 100.0, 100.0,
            "a switched office LAN (sub-millisecond RTT); bandwidth capped at 100 Mbit/s, "
            "what the user-space link forwards reliably"),
    Profile("4g", 70.0, 5.0, 0.005, 1.0, 12.0, 12.0,
            "WebPageTest 'LTE' preset (12/12 Mbit/s, 70 ms RTT); 5 ms jitter and 0.5 % loss "
            "ours, between WebPageTest (0 %) and BrowserStack's lossy mobile presets (1 %)"),
    Profile("3g", 300.0, 20.0, 0.01, 1.0, 1.6, 0.768,
            "WebPageTest '3G' preset (1.6 Mbit/s / 768 kbit/s, 300 ms RTT); 1 % loss from "
            "BrowserStack '3.5g-hspa-lossy'; 20 ms jitter ours"),
    Profile("lossy-wifi", 20.0, 5.0, 0.03, 3.0, 20.0, 20.0,
            "the issue's outside run (2x10 ms, 3 % loss per direction); bursts of 3 packets "
            "as Wi-Fi losses cluster (interference, retries exhausted)"),
    Profile("intercontinental", 150.0, 2.0, 0.001, 1.0, 50.0, 50.0,
            "a long-haul path of the order of Europe - US West (WonderNetwork's ping tables "
            "give 140-160 ms for such pairs); 0.1 % loss"),
)}


def get(name: str) -> Profile:
    """The profile called ``name``, or a ValueError listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown network profile {name!r}; known: "
                         f"{', '.join(PROFILES)}") from None
