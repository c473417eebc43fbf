"""How two WebRTC peers of the suite find each other: ICE host candidates on a chosen address.

aioice offers no way to choose interfaces (aiortc/aioice#2) and, as RFC 8445 §5.1.1.1 asks,
never gathers loopback. The suite runs on loopback, so each peer connection, server's and
client's alike, is told where to gather (:func:`pin_host_candidates`), one peer connection at a
time: nothing is changed for the other peers of the process. SDP filtering could not help, as a
loopback candidate is never gathered to keep.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aioice import Candidate
from aiortc import RTCPeerConnection


def loopback_address(host: str | None) -> str | None:
    """The loopback address to pin candidates to when ``host`` is one, else None."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host or "")
    except ValueError:
        return None
    return str(address) if address.is_loopback else None


def pin_host_candidates(pc: RTCPeerConnection, addresses: Sequence[str]) -> None:
    """Gather the host candidates of ``pc`` on exactly ``addresses``.

    Call it once ``pc`` has its data channels' transport (after ``createDataChannel`` on the
    offering side, ``setRemoteDescription`` on the answering side) and before
    ``setLocalDescription``, which gathers. Only this peer connection's ICE agent is told:
    where aioice would hand its host addresses to the agent's candidate gathering, the agent
    is given ``addresses`` instead."""
    if pc.sctp is None:
        raise ValueError("pin_host_candidates needs the peer's data-channel transport first")
    agent = pc.sctp.transport.transport.iceGatherer._connection
    gather = agent.get_component_candidates
    pinned = list(addresses)

    async def pinned_candidates(component: int, addresses: list[str],
                                timeout: int = 5) -> list[Candidate]:
        return await gather(component=component, addresses=pinned, timeout=timeout)

    agent.get_component_candidates = pinned_candidates  # type: ignore[method-assign]
