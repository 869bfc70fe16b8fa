"""Fault 6: the stream is resharded under load (SplitShard, then MergeShards of the children).

Like every fault test, it runs on a stream of its own (conftest.own_resources), deleted
afterwards: the stack's shared stream `analytics-events` is never resharded.
"""
from __future__ import annotations

import time

from conftest import (
    RES,
    Load,
    assert_exact,
    checkpoints,
    client,
    note,
    verify,
    wait_caught_up,
    wait_gauge_low,
    wait_stream_active,
)


def open_shards(stream: str) -> list[dict]:
    shards = client("kinesis").list_shards(StreamName=stream)["Shards"]
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def test_split_and_merge_under_load_are_followed_and_exact():
    """Invariant: when a shard is split, and its two children merged again, while events flow,
    the runner drains each parent, then follows its children (a child starts only after its
    parents are drained), checkpoints every closed shard as finished, and every acknowledged
    event is stored exactly once (verify exits 0 on the resharded stream)."""
    stream = RES.stream
    kinesis = client("kinesis")
    # A few 503s are possible while the stream is UPDATING; they are counted, not hidden.
    with Load("shard-split", duration_s=35, FAILED_RATE="0.05", CHECKS_RATE="0.95") as load:
        load.at(8)
        parent = sorted(open_shards(stream), key=lambda s: s["ShardId"])[0]
        lo, hi = (int(parent["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
        kinesis.split_shard(StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
        wait_stream_active(stream)
        children = sorted(
            (s for s in open_shards(stream) if s.get("ParentShardId") == parent["ShardId"]),
            key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]),
        )
        assert len(children) == 2, open_shards(stream)

        load.at(20)
        kinesis.merge_shards(StreamName=stream, ShardToMerge=children[0]["ShardId"], AdjacentShardToMerge=children[1]["ShardId"])
        wait_stream_active(stream)
        merged = [s for s in open_shards(stream) if s.get("ParentShardId") in {c["ShardId"] for c in children}]
        assert len(merged) == 1, open_shards(stream)
        load.finish()
    recovery, worst = wait_caught_up(time.monotonic())

    done = checkpoints(stream)
    for closed in [parent, *children]:
        deadline = time.monotonic() + 30
        while not done.get(closed["ShardId"], (None, False))[1]:
            assert time.monotonic() < deadline, f"{closed['ShardId']} never checkpointed as drained: {done}"
            time.sleep(0.5)
            done = checkpoints(stream)
    assert merged[0]["ShardId"] in done, f"the merged child was never read: {done}"
    lag = wait_gauge_low()  # the max over every shard's gauge, the closed ones included
    v = verify(load.acks)
    assert_exact(v)
    note(
        f"split {parent['ShardId']} -> {children[0]['ShardId']} + {children[1]['ShardId']}, merged -> "
        f"{merged[0]['ShardId']}: {load.line()}; verify OK {v.acknowledged} events in {v.seconds:.0f} s; "
        f"every parent drained and checkpointed closed; lag gauge now {lag:.0f} ms (all shards)"
    )
