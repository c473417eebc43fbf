"""The hol scenario's bystander rule, without sockets: in a complete round every message but
the slowest is a bystander; a round with a message missing keeps them all."""

from __future__ import annotations

from sobranie_bench.harness.recorder import Recorder, decode, stats
from sobranie_bench.harness.scenarios.hol import mode_name, record_rounds

MS = 1_000_000


def test_the_slowest_of_a_complete_round_is_not_a_bystander() -> None:
    every, bystanders = Recorder(), Recorder()
    rounds = [{"a": (0, 40 * MS), "b": (0, 41 * MS), "c": (0, 300 * MS)},  # c lost a packet
              {"a": (10 * MS, 50 * MS), "c": (10 * MS, 52 * MS)}]  # b lost for good
    assert record_rounds(rounds, 3, every, bystanders) == 5
    assert stats(decode(every.encoded()["measured"]))["count"] == 5
    kept = stats(decode(bystanders.encoded()["measured"]))
    assert kept["count"] == 4 and kept["max"] < 50_000  # µs: the 300 ms one is left out


def test_head_of_line_blocking_shows_in_the_bystanders() -> None:
    """One ordered stream: a loss delays the whole round; a stream per flow: only its flow."""
    blocked, free = Recorder(), Recorder()
    record_rounds([{"a": (0, 300 * MS), "b": (0, 301 * MS), "c": (0, 302 * MS)}], 3,
                  Recorder(), blocked)
    record_rounds([{"a": (0, 40 * MS), "b": (0, 41 * MS), "c": (0, 300 * MS)}], 3,
                  Recorder(), free)
    assert stats(decode(blocked.encoded()["measured"]))["p50"] >= 300_000
    assert stats(decode(free.encoded()["measured"]))["max"] < 50_000


def test_mode_names_fit_metric_names() -> None:
    assert mode_name("per-channel") == "per_channel" and mode_name("split") == "split"
