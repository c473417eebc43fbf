"""The Sobranie real-time contract in code, imported by the servers and the clients alike.

- :mod:`~sobranie_contract.wire`: envelopes (requests, replies, errors), strict JSON, channel
  names, cursors and the contract's limits (docs/protocol.md).
- :mod:`~sobranie_contract.framing`: how envelopes ride each transport where that is more than
  one envelope per frame: WebTransport's newline-delimited stream and session capsules, the
  WebRTC data channels' labels.
- :mod:`~sobranie_contract.tokens`: the JWTs both sides make and read (HS256, shared secret).
- :mod:`~sobranie_contract.ice`: how two peers on loopback find each other over WebRTC.

Nothing here imports a server or a client: both sides depend on this package, never on each
other.
"""
