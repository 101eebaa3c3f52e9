"""Schedules are data: each kind's timestep table is what its paper describes."""

import pytest
import torch

from longvid.schedule import ABSENT, FlowMatch, make_schedule, shift_timesteps

SF_STEPS = [1000, 750, 500, 250]


def test_shift_warps_self_forcing_steps():
    # Self-Forcing / LongLive: [1000, 750, 500, 250] with shift 5 -> [1000, 937.5, 833.3, 625]
    assert shift_timesteps(SF_STEPS, 5.0) == pytest.approx([1000, 937.5, 833.3333, 625.0], abs=1e-3)
    assert shift_timesteps(SF_STEPS, 1.0) == pytest.approx(SF_STEPS)


def test_flow_match_roundtrip():
    fm = FlowMatch()
    x0, noise = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    t = torch.tensor([1000.0, 500.0, 100.0])
    xt = fm.add_noise(x0, noise, t)
    assert torch.allclose(xt[:, :, 0], noise[:, :, 0])  # t = 1000 is pure noise
    assert torch.allclose(fm.to_x0(xt, fm.flow_target(x0, noise), t), x0, atol=1e-5)


def test_block_schedule_is_self_forcing():
    s = make_schedule("block", SF_STEPS, 3, 5.0)
    table = s.table(6)
    warped = torch.tensor(shift_timesteps(SF_STEPS, 5.0))
    # Block 0: four denoising steps then the t = 0 commit pass; then block 1 the same, except
    # that the last block is not committed (no later frame would read it).
    for b in range(2):
        rows = table[b * 5 : b * 5 + 5]
        cols = slice(b * 3, b * 3 + 3)
        assert torch.allclose(rows[:4, cols], warped[:, None].expand(4, 3).float())
        assert torch.all(rows[4:, cols] == 0) and len(rows) == (5 if b == 0 else 4)
        other = [c for c in range(6) if not (b * 3 <= c < b * 3 + 3)]
        assert torch.all(rows[:, other] == ABSENT)
    assert table.shape[0] == 9  # 5 forwards per block, 4 for the last


def test_lagged_schedule_is_pyramid():
    s = make_schedule("lagged", SF_STEPS, 2, 1.0, ar_step=2)
    table = s.table(8)
    first_step = {}
    for i, row in enumerate(table):
        present = (row != ABSENT).nonzero().flatten()
        if len(present) and not torch.all(row[present] == 0):
            t = row[present]
            assert torch.all(t[:-1] <= t[1:]), "noise must not decrease along frames (older = cleaner)"
            for f in present.tolist():
                first_step.setdefault(f // 2, i)
    starts = [first_step[b] for b in range(4)]
    # each block starts ar_step denoising steps after the previous one (plus one commit row)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(g in (2, 3) for g in gaps) and starts == sorted(starts)


def test_rolling_schedule_window():
    steps = [1000, 800, 600, 400, 200]
    s = make_schedule("rolling", steps, 3, 5.0)
    assert s.blocks_in_flight == 5 and s.max_chunk_frames == 15
    denoise = [st for st in s.steps(30) if not st.commit]
    steady = denoise[4]  # window full: 5 blocks at 5 staggered levels in one forward
    assert steady.stop - steady.start == 15
    levels = steady.t.view(5, 3)[:, 0]
    assert torch.allclose(levels, torch.tensor(shift_timesteps(steps, 5.0)).flip(0))
    # the oldest block finishes at every steady step
    assert len(steady.finished) == 3 and steady.finished.start == steady.start


@pytest.mark.parametrize("kind,ar", [("block", 1), ("lagged", 1), ("lagged", 2), ("lagged", 3), ("rolling", 1)])
@pytest.mark.parametrize("num_frames", [9, 10, 31])
def test_every_frame_reaches_zero_once_in_order(kind, ar, num_frames):
    s = make_schedule(kind, SF_STEPS, 3, 5.0, ar_step=ar)
    commits, finished, last_t = [], [], {}
    for st in s.steps(num_frames):
        for i, f in enumerate(st.frames):
            t = float(st.t[i])
            if f in last_t and not st.commit:
                assert t < last_t[f], "a frame's noise level must strictly decrease"
            last_t[f] = t
        if st.commit:
            commits.extend(st.frames)
        finished.extend(st.finished)
    last_block = (s.num_blocks(num_frames) - 1) * 3
    assert commits == list(range(last_block))  # the last block's commit would be read by nothing
    assert finished == list(range(num_frames))
    # every frame went through every denoising level
    table = s.table(num_frames)
    for f in range(num_frames):
        col = table[:, f]
        assert (col > 0).sum() == len(SF_STEPS) and (col == 0).sum() == (f < last_block)



def test_predicted_noise_roundtrip():
    fm = FlowMatch()
    x0, noise = torch.randn(1, 4, 3, 2, 2), torch.randn(1, 4, 3, 2, 2)
    t = torch.tensor([937.5, 500.0, 100.0])
    xt = fm.add_noise(x0, noise, t)
    assert torch.allclose(fm.to_noise(xt, fm.flow_target(x0, noise), t), noise, atol=1e-5)
