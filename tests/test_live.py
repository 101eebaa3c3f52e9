"""Live steering: prompts given while the stream runs, pause / stop, the replay timeline file,
and the frame hub viewers read from (tiny random model, CPU)."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import yaml
from conftest import tiny_config, tiny_pipeline

from longvid.live import (
    FrameHub, LivePromptError, LiveSession, LiveTimeline, first_pixel_frame, handle_command,
    timeline_yaml,
)
from longvid.timeline import MAX_PROMPT_CHARS, Prompt, Timeline, load_timeline, single

FPS, TF, K = 16, 4, 3  # tiny_config: 16 fps, 4 pixel frames per latent, 3-frame blocks


def digest(frame) -> tuple[int, str, str]:
    return frame.index, frame.prompt, hashlib.sha256(frame.image.tobytes()).hexdigest()


def live_run(pipe, base: Timeline, actions: dict, seed: int = 0, record_path=None):
    """Stream `base` live; after writing frame i, call actions[i](session). Returns the session
    and the frames' digests."""
    session = LiveSession(LiveTimeline(base, pipe.schedule.block_frames), seed=seed,
                          record_path=record_path)
    out = []
    for frame in session.wrap(pipe.stream(session.timeline, seed=seed)):
        out.append(digest(frame))
        if frame.index in actions:
            actions[frame.index](session)
    return session, out


def replay(pipe, path, seed: int = 0):
    timeline = load_timeline(path, fps=FPS, temporal_factor=TF)
    return [digest(f) for f in pipe.stream(timeline, seed=seed)], timeline


SCHEDULES = {
    "block": {},
    "rolling": {"kind": "rolling", "ar_step": 1},
}


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_live_prompt_switches_at_next_block_and_replays_exactly(schedule, tmp_path):
    pipe = tiny_pipeline(tiny_config(schedule=SCHEDULES[schedule]))
    base = single("a red ball", 6.0, FPS, TF)
    events = []
    record = tmp_path / "live.timeline.yaml"
    session, frames = live_run(pipe, base, {
        10: lambda s: events.append(s.submit_prompt("a blue square", "test")),
        30: lambda s: events.append(s.submit_prompt("a green triangle", "test")),
    }, seed=7, record_path=record)
    assert pipe.stats.recaches == 2  # both switches re-encoded the cached window
    for event in events:  # each took effect at the frame it announced, not before
        first = event["first_frame"]
        assert frames[first - 1][1] != event["text"] and frames[first][1] == event["text"]
        assert event["start_latent_frame"] % K == 0  # on a block boundary
        assert first > event["received_after_frames"]  # never in a block already started
    # frames before the first switch are those of a run without live prompts (under a rolling
    # schedule the blocks still in flight at the switch already denoise under the new prompt,
    # so only the frames made before the prompt arrived are the same)
    plain = [digest(f) for f in pipe.stream(base, seed=7)]
    first = events[0]["first_frame"]
    same = first if schedule == "block" else events[0]["received_after_frames"]
    assert frames[:same] == plain[:same] and frames[first:] != plain[first:]
    # the recorded timeline replays to the very same video
    replayed, timeline = replay(pipe, record, seed=7)
    assert replayed == frames
    assert [p.text for p in timeline.prompts] == ["a red ball", "a blue square", "a green triangle"]


def test_stop_ends_at_block_boundary_and_replays(tmp_path):
    pipe = tiny_pipeline()
    record = tmp_path / "stopped.yaml"
    session, frames = live_run(pipe, single("a red ball", 4.0, FPS, TF), {
        5: lambda s: s.submit_prompt("a blue square", "test"),
        12: lambda s: s.stop("test"),
    }, record_path=record)
    block_end = first_pixel_frame(2 * K, TF)  # frame 12 lies in block 1, which ends at frame 20
    assert len(frames) == block_end == session.stopped_at == 21
    assert session.status()["state"] == "finished"
    replayed, timeline = replay(pipe, record)
    assert timeline.seconds == pytest.approx(21 / FPS)
    assert replayed == frames


def test_pending_prompt_is_replaced_and_scripted_switches_stay():
    base = Timeline((Prompt("a", 0.0, 0), Prompt("c", 1.3125, 6)), 4.0, FPS, TF)
    live = LiveTimeline(base, K)
    live.prompt_index_at(0)  # block 0 has started
    first, replaced = live.add("b")
    assert first.start_frame == 3 and replaced == []
    second, replaced = live.add("b2")  # block 1 not started yet: the newer prompt wins
    assert second.start_frame == 3 and [p.text for p in replaced] == ["b"]
    assert [(p.text, p.start_frame) for p in live.prompts] == [("a", 0), ("b2", 3), ("c", 6)]
    live.prompt_index_at(6)  # blocks up to 2 have started
    third, replaced = live.add("d")
    assert third.start_frame == 9 and replaced == []
    # every prompt round-trips through the YAML at the same latent frame
    loaded = yaml.safe_load(timeline_yaml(live.snapshot()))
    assert [p["text"] for p in loaded["prompts"]] == ["a", "b2", "c", "d"]


def test_prompt_errors_are_clear():
    live = LiveTimeline(single("a", 1.0, FPS, TF), K)  # 17 latent frames: blocks 0..5
    for bad, fragment in (("   ", "empty"), ("x" * (MAX_PROMPT_CHARS + 1), "over the limit"),
                          (None, "must be text")):
        with pytest.raises(LivePromptError, match=fragment):
            live.add(bad)
    live.prompt_index_at(15)  # the last block has started
    with pytest.raises(LivePromptError, match="last block"):
        live.add("too late")
    assert live.next_start_frame() is None


def test_typed_commands():
    session = LiveSession(LiveTimeline(single("a", 2.0, FPS, TF), K))
    assert handle_command(session, "a blue square").startswith("prompt from frame 9")
    assert handle_command(session, ":pause") == "paused" and session.paused
    assert handle_command(session, ":resume") == "resumed" and not session.paused
    assert "unknown command" in handle_command(session, ":jump")
    assert "refused" in handle_command(session, "x" * (MAX_PROMPT_CHARS + 1))
    assert handle_command(session, ":stop").startswith("stopping") and session.stop_requested
    assert "stopping" in handle_command(session, "another prompt")


def test_pause_holds_generation_until_resumed():
    pipe = tiny_pipeline()
    session = LiveSession(LiveTimeline(single("a", 2.0, FPS, TF), K))
    session.pause("test")
    frames = []
    thread = threading.Thread(target=lambda: frames.extend(session.wrap(pipe.stream(session.timeline))))
    thread.start()
    deadline = time.monotonic() + 60
    while session.frames < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    forwards = pipe.stats.forwards
    time.sleep(0.3)
    assert session.status()["state"] == "paused"
    assert session.frames == 1 and pipe.stats.forwards == forwards  # nothing computed
    session.resume("test")
    thread.join(60)
    assert len(frames) == session.total == 32


def test_hub_encodes_only_for_viewers_and_once_per_frame():
    pipe = tiny_pipeline()
    session = LiveSession(LiveTimeline(single("a", 1.0, FPS, TF), K))
    for _ in session.wrap(pipe.stream(session.timeline)):
        pass
    hub = session.hub
    assert hub.encoded == 0 and hub.closed  # nobody watched: no JPEG was made
    seq, jpeg = hub.jpeg()
    assert seq == 16 and jpeg[:2] == b"\xff\xd8"
    assert hub.jpeg() == (seq, jpeg) and hub.encoded == 1


def test_hub_wait_wakes_on_publish_and_close():
    hub = FrameHub()
    assert hub.latest() == (0, None) and hub.jpeg() == (0, None)
    assert hub.wait(0, 0.01) == 0
    hub.close()
    assert hub.wait(0, 10) == 0  # returns at once once closed
