"""Workload model of Sobranie's real-time features, turned into aggregate message rates.

Every rate is *per online user per second* unless its name says otherwise, so the whole load
scales with :attr:`Workload.online_users`. Defaults are planning assumptions, not
measurements; override any of them with :meth:`Workload.with_`.

Fan-out is modelled per publish: a message published to a channel reaches each *potential*
recipient (room members but the sender, friends, followers, co-editors, viewers) who is
online, independently with probability ``online_probability``. Presence is the expensive
one: in a group of ``g`` friends each of the ``g`` members' changes goes to the other
``g - 1``, so a group costs ``g * (g - 1)`` deliveries per round of changes, quadratic in
``g``. Slack tamed the same curve by *scoping* (clients subscribe only to the presence of
users they can see: ``presence_subscription_limit``) and *batching/debouncing* changes
(``presence_debounce_s``), see Slack's changelog "Batching presence events and presence
subscriptions in the RTM API" (2017-06).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

FEATURES = ("chat", "presence", "collab", "notifications", "feed", "counters")
DEFAULT_TRANSPORT_FOR = {
    "chat": "ws",
    "presence": "ws",
    "collab": "ws",
    "notifications": "sse",
    "feed": "sse",
    "counters": "sse",
}


@dataclass(frozen=True)
class RoomSize:
    """A class of chat rooms and the share of chat messages sent in rooms of that class."""

    members: int
    """People in a room of this class, the sender included (2 is a direct message)."""
    message_share: float
    """Share of all chat messages that are sent in rooms of this class (shares sum to 1)."""


DEFAULT_ROOMS = (
    RoomSize(2, 0.60),  # direct messages
    RoomSize(8, 0.25),  # small groups: family, close friends
    RoomSize(50, 0.12),  # groups: a class, a team
    RoomSize(500, 0.025),  # large groups
    RoomSize(5000, 0.005),  # communities
)


@dataclass(frozen=True)
class RecipientGroup:
    """Who a class of publishes can reach."""

    potential: int
    """Potential recipients of one publish, the sender excluded."""
    online_probability: float
    """Probability that a potential recipient is online (independently of the others)."""
    share: float
    """Share of the feature's publishes that go to a group of this kind."""

    @property
    def mean_recipients(self) -> float:
        """Expected online recipients of one publish."""
        return self.potential * self.online_probability


@dataclass(frozen=True)
class FeatureLoad:
    """Aggregate rates of one feature for the whole online population."""

    feature: str
    """Feature name, one of FEATURES."""
    transport: str
    """Transport that carries the feature to clients."""
    inbound_per_s: float
    """Client-to-server messages per second (zero for server-originated features)."""
    publishes_per_s: float
    """Messages published to the broker (Redis) per second."""
    groups: tuple[RecipientGroup, ...]
    """Recipient classes of the publishes."""

    @property
    def mean_fanout(self) -> float:
        """Expected online recipients per publish."""
        return sum(g.share * g.mean_recipients for g in self.groups)

    @property
    def deliveries_per_s(self) -> float:
        """Server-to-client messages per second."""
        return self.publishes_per_s * self.mean_fanout


@dataclass(frozen=True)
class Workload:
    """Sobranie's real-time load; every field has a default and a unit."""

    online_users: int = 1_000_000
    """Users connected at the same time (the peak being planned for)."""
    payload_bytes: int = 300
    """Mean application payload of one message (JSON envelope included), bytes."""
    session_length_s: float = 1200.0
    """Mean time a user stays connected before disconnecting (drives connection churn), s."""
    member_online_probability: float = 0.3
    """Probability that a friend, follower or room member is online when a message is sent."""
    chat_msgs_per_user_s: float = 0.005
    """Chat messages sent per online user per second (one every 200 s)."""
    chat_rooms: tuple[RoomSize, ...] = DEFAULT_ROOMS
    """Room-size distribution of chat messages, from DMs to communities."""
    presence_changes_per_user_s: float = 1 / 600
    """Presence changes (online, away, typing-idle) per online user per second."""
    friends_per_user: int = 150
    """Friends whose presence a user sees; the presence group size g."""
    presence_subscription_limit: int | None = None
    """Scoping: subscribe only to this many visible friends' presence (None: all friends)."""
    presence_debounce_s: float = 0.0
    """Debounce window: at most one presence publish per user per window, s (0: off)."""
    collab_active_fraction: float = 0.01
    """Share of online users editing a shared document at any time."""
    collab_ops_per_user_s: float = 0.5
    """Batched edit operations per active editor per second (keystrokes batched per 2 s)."""
    collab_editors: int = 3
    """Editors per shared document, the sender included."""
    notifications_per_user_s: float = 1 / 900
    """Notifications delivered per online user per second (four an hour)."""
    feed_posts_per_user_s: float = 1 / 3600
    """Posts per online user per second, pushed live to online followers."""
    followers_per_user: int = 150
    """Followers per posting user."""
    counter_updates_per_viewer_s: float = 0.05
    """Live counter updates (likes, views) an online user sees per second, after coalescing."""
    viewers_per_counter: int = 25
    """Users watching one live counter at once."""
    transport_for: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TRANSPORT_FOR))
    """Transport that carries each feature."""

    def with_(self, **changes: Any) -> Workload:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def all_over(self, transport: str) -> Workload:
        """A copy in which ``transport`` carries every feature (a what-if per transport)."""
        return replace(self, transport_for=dict.fromkeys(FEATURES, transport))

    @property
    def transports(self) -> tuple[str, ...]:
        """Transports in use, in first-use order; each online user holds one of each."""
        return tuple(dict.fromkeys(self.transport_for[f] for f in FEATURES))

    @property
    def presence_rate_per_user_s(self) -> float:
        """Presence publishes per user per second after debouncing.

        A debounce window T lets through at most one change per T: the non-paralysable
        dead-time formula r / (1 + r T) for Poisson changes at rate r.
        """
        r = self.presence_changes_per_user_s
        return r / (1.0 + r * self.presence_debounce_s)

    @property
    def presence_audience(self) -> int:
        """Friends who receive one presence change (all friends, or the scoped subset)."""
        if self.presence_subscription_limit is None:
            return self.friends_per_user
        return min(self.friends_per_user, self.presence_subscription_limit)


def aggregate_rates(workload: Workload) -> tuple[FeatureLoad, ...]:
    """Per-feature inbound, publish and delivery rates for the whole online population.

    Users are independent Poisson sources, so a feature's rate is the superposition: the
    per-user rate times the number of online users.
    """
    n = workload.online_users
    p = workload.member_online_probability
    t = workload.transport_for
    return (
        FeatureLoad(
            "chat",
            t["chat"],
            inbound_per_s=n * workload.chat_msgs_per_user_s,
            publishes_per_s=n * workload.chat_msgs_per_user_s,
            groups=tuple(
                RecipientGroup(room.members - 1, p, room.message_share)
                for room in workload.chat_rooms
            ),
        ),
        FeatureLoad(
            "presence",
            t["presence"],
            inbound_per_s=n * workload.presence_rate_per_user_s,
            publishes_per_s=n * workload.presence_rate_per_user_s,
            groups=(RecipientGroup(workload.presence_audience, p, 1.0),),
        ),
        FeatureLoad(
            "collab",
            t["collab"],
            inbound_per_s=n * workload.collab_active_fraction * workload.collab_ops_per_user_s,
            publishes_per_s=n * workload.collab_active_fraction * workload.collab_ops_per_user_s,
            groups=(RecipientGroup(workload.collab_editors - 1, 1.0, 1.0),),
        ),
        FeatureLoad(
            "notifications",
            t["notifications"],
            inbound_per_s=0.0,
            publishes_per_s=n * workload.notifications_per_user_s,
            groups=(RecipientGroup(1, 1.0, 1.0),),
        ),
        FeatureLoad(
            "feed",
            t["feed"],
            inbound_per_s=0.0,
            publishes_per_s=n * workload.feed_posts_per_user_s,
            groups=(RecipientGroup(workload.followers_per_user, p, 1.0),),
        ),
        FeatureLoad(
            "counters",
            t["counters"],
            inbound_per_s=0.0,
            publishes_per_s=n
            * workload.counter_updates_per_viewer_s
            / workload.viewers_per_counter,
            groups=(RecipientGroup(workload.viewers_per_counter, 1.0, 1.0),),
        ),
    )
