"""The gradient check: held-out videos moved along a critic's pixel gradient, read by the oracle before and after."""
from __future__ import annotations

import json

import pytest

from vidcli.toyworld.gradient import ascend, gradient_check, pixel_ascent, smoothed, summary_line


def _renders(root, count=2):
    """(caption, TA questions, render) of the world's first held-out DRF records."""
    from vidcli.toyworld.scene import Scene, render

    world = root / "world"
    scenes = {r["id"]: Scene.from_dict(r["scene"])
              for r in map(json.loads, (world / "scenes.test.jsonl").read_text().splitlines())}
    records = [json.loads(line) for line in (world / "drf.test.jsonl").read_text().splitlines()][:count]
    return [(r["caption"], [q for q in r["questions"] if q["dim"] == "TA"], render(scenes[r["id"]])) for r in records]


@pytest.mark.parametrize("sign", [1, -1])
def test_steps_along_the_gradient_raise_the_critics_reward_and_steps_against_it_lower_it(toy_build, sign):
    root, _ = toy_build
    result = pixel_ascent(root / "critic", _renders(root), steps=2, step=sign * 2 / 255)
    assert result["videos"] == 2 and result["steps"] == 2
    for row in result["per_video"]:
        assert (row["reward_after"] - row["reward_before"]) * sign > 0
        assert 0 < row["largest_change"] <= 2 * 2 / 255 + 1e-6  # each step moves a pixel by 2/255 at most
    assert result["reward"]["after"] == pytest.approx(sum(r["reward_after"] for r in result["per_video"]) / 2)
    for kind, got in result["adherence"]["by_kind"].items():  # over the videos whose captions state the kind
        mine = [r for r in result["per_video"] if kind in r["by_kind_before"]]
        before = sum(r["by_kind_before"][kind] for r in mine) / len(mine)
        after = sum(r["by_kind_after"][kind] for r in mine) / len(mine)
        assert got == {"videos": len(mine), "before": pytest.approx(before), "after": pytest.approx(after)}


def test_ascend_returns_the_moved_frames_the_reward_was_read_on(toy_build):
    """The moved video comes back as uint8 frames within the steps' reach of the start, and the critic's loss
    on them is the ``after`` it reports (the steps land on whole grey levels, so nothing is lost in rounding)."""
    import numpy as np
    import torch

    from vidcli.rewards.vlm import VLMScorer, vqa_loss

    root, _ = toy_build
    scorer = VLMScorer.from_pretrained(root / "critic")
    (_, questions, frames), = _renders(root, count=1)
    moved, before, after, largest = ascend(scorer, frames, questions, steps=2)
    assert moved.dtype == np.uint8 and moved.shape == frames.shape
    change = np.abs(moved.astype(int) - frames.astype(int))
    assert 0 < change.max() <= 4 and largest == pytest.approx(change.max() / 255)
    assert after < before
    x = torch.from_numpy(moved).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        assert float(vqa_loss(scorer, x, questions, fps=16.0)) == pytest.approx(after, rel=1e-5)


def test_without_steps_the_videos_are_read_as_they_are(toy_build):
    """A render shows every fact of its caption and no defect: adherence 1 and clean, before and after."""
    from vidcli.rewards.vlm import VLMScorer, vqa_loss

    root, _ = toy_build
    videos = _renders(root)
    result = pixel_ascent(root / "critic", videos, steps=0)
    scorer = VLMScorer.from_pretrained(root / "critic")
    for (caption, questions, frames), row in zip(videos, result["per_video"]):
        import torch

        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
        assert row["reward_before"] == row["reward_after"] == pytest.approx(-float(vqa_loss(scorer, x, questions,
                                                                                           fps=16.0)), rel=1e-5)
        assert row["adherence_before"] == row["adherence_after"] == 1.0
        assert row["clean_before"] == row["clean_after"] == 1.0
        assert row["largest_change"] == 0.0
    assert result["adherence"]["change"]["mean"] == 0.0
    from vidcli.toyworld.language import read_facts

    kinds = {fact.kind for caption, _, _ in videos for fact in read_facts(caption)}
    assert set(result["adherence"]["by_kind"]) == kinds and {"object", "colour", "background"} <= kinds
    for kind, got in result["adherence"]["by_kind"].items():
        count = sum(any(f.kind == kind for f in read_facts(caption)) for caption, _, _ in videos)
        assert got == {"videos": count, "before": 1.0, "after": 1.0}


def _blurred_by_hand(grad, sigma):
    """A 2-D Gaussian window of ceil(3σ) pixels, summed around each pixel of each plane, mirrored indices."""
    import math

    import numpy as np

    radius = math.ceil(3 * sigma)
    k = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma ** 2))
    window = np.outer(k, k) / k.sum() ** 2
    planes = grad.reshape(-1, *grad.shape[-2:])
    out = np.zeros_like(planes)
    h, w = planes.shape[-2:]

    def mirror(i, n):
        return -i if i < 0 else 2 * (n - 1) - i if i >= n else i

    for y in range(h):
        for x in range(w):
            rows = [mirror(y + d, h) for d in range(-radius, radius + 1)]
            cols = [mirror(x + d, w) for d in range(-radius, radius + 1)]
            out[:, y, x] = (planes[:, rows][:, :, cols] * window).sum(axis=(1, 2))
    return out.reshape(grad.shape)


@pytest.mark.parametrize("sigma", [0.7, 2.0])
def test_the_blur_is_a_gaussian_over_each_frame_mirrored_at_the_edges(sigma):
    import numpy as np
    import torch

    grad = np.random.default_rng(0).standard_normal((2, 3, 12, 14)).astype(np.float64)
    got = smoothed(torch.from_numpy(grad), sigma).numpy()
    assert got == pytest.approx(_blurred_by_hand(grad, sigma), abs=1e-12)
    assert (smoothed(torch.from_numpy(grad), 0.0).numpy() == grad).all()
    with pytest.raises(ValueError, match="more than a 12x14 frame"):
        smoothed(torch.from_numpy(grad), 4.0)


def test_blurred_steps_follow_the_sign_of_the_blurred_gradient(toy_build):
    """One step with ``blur``: the frames move by the step times the sign of the hand-blurred gradient, and the
    reward after is the critic's on exactly those frames (and not on the frames of the unblurred step)."""
    import numpy as np
    import torch

    from vidcli.rewards.vlm import VLMScorer, vqa_loss

    root, _ = toy_build
    videos = _renders(root, count=1)
    step = 16 / 255
    result = pixel_ascent(root / "critic", videos, steps=1, step=step, blur=2.0)
    plain = pixel_ascent(root / "critic", videos, steps=1, step=step)
    assert result["blur"] == 2.0 and plain["blur"] == 0.0
    caption, questions, frames = videos[0]
    scorer = VLMScorer.from_pretrained(root / "critic")
    x = (torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    (grad,) = torch.autograd.grad(vqa_loss(scorer, x, questions, fps=16.0), x)
    direction = np.sign(_blurred_by_hand(grad.double().numpy(), 2.0)).astype(np.float32)
    with torch.no_grad():
        expected = -float(vqa_loss(scorer, (x.detach() - step * torch.from_numpy(direction)).clamp(0, 1), questions,
                                   fps=16.0))
    got, unblurred = result["per_video"][0]["reward_after"], plain["per_video"][0]["reward_after"]
    assert got == pytest.approx(expected, rel=1e-6)
    assert abs(unblurred - expected) > 100 * abs(got - expected) + 1e-3


def test_summary_line_gives_the_change_and_its_interval():
    result = {"videos": 3, "reward": {"before": -12.1, "after": -7.17},
              "adherence": {"before": 0.528, "after": 0.504,
                            "change": {"mean": -0.024, "ci95": [-0.094, 0.046]}},
              "clean": {"before": 0.5625, "after": 0.0625}}
    assert summary_line(result) == ("gradient-check: reward -12.10 -> -7.17, oracle adherence 0.528 -> 0.504 "
                                    "(-0.024 [-0.094, +0.046]), defect-free videos 0.56 -> 0.06 (n=3)")
    assert summary_line({**result, "blur": 2.0}).endswith("0.56 -> 0.06, gradient blurred 2 px (n=3)")


@pytest.mark.parametrize("value", ["12", "-1", "wide"])
def test_a_blur_out_of_range_is_one_line(value, capsys):
    from vidcli.toyworld.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["gradient-check", "--blur", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"--blur: must be a number of pixels from 0 to 10, got {value!r}" in err[-1]


@pytest.mark.slow
def test_gradient_check_reads_the_generators_videos_of_held_out_captions(toy_build, monkeypatch):
    """The build's generator draws the first held-out captions (``vidcli generate``); the build's critic by default."""
    root, _ = toy_build
    monkeypatch.setattr("vidcli.toyworld.build.ensure_world", lambda seed, quick: toy_build)
    result = gradient_check(quick=True, count=2, steps=1)
    assert result["critic"] == str(root / "critic") and result["videos"] == 2
    captions = [json.loads(line)["caption"] for line in (root / "world" / "drf.test.jsonl").read_text().splitlines()]
    assert [r["caption"] for r in result["per_video"]] == captions[:2]
    assert all(r["reward_after"] > r["reward_before"] for r in result["per_video"])


def test_a_critic_with_damaged_weights_is_one_line_naming_the_file(toy_build, tmp_path, capsys):
    """A truncated weights file (a copy cut short) is refused before anything runs, not as a loader's traceback."""
    import shutil

    from vidcli.toyworld.__main__ import main

    root, _ = toy_build
    critic = tmp_path / "critic"
    shutil.copytree(root / "critic", critic)
    weights = critic / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(SystemExit) as exc:
        main(["gradient-check", str(critic), "--quick"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"{weights}: weights file is truncated" in err[-1] and "Traceback" not in "\n".join(err)


def test_a_critic_path_that_is_not_a_critic_is_one_line(tmp_path, capsys):
    from vidcli.toyworld.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["gradient-check", str(tmp_path / "critc")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not a saved critic" in err[-1] and "Traceback" not in "\n".join(err)


# gradient-check with the build replaced by a one-record world and `vidcli generate` by one long command,
# driven through the CLI in a process of its own.
_LONG_CHECK = """
import json, sys
from pathlib import Path
from vidcli.toyworld import build, report
from vidcli.toyworld.__main__ import main

root, pids = Path(sys.argv[1]), Path(sys.argv[2])
(root / "world").mkdir(parents=True)
(root / "world" / "drf.test.jsonl").write_text(json.dumps({"id": "a", "caption": "A red ball.", "questions": []}))
build.ensure_world = lambda seed, quick: (root, {"key": "k"})

def generate(ctx, model, prompts, generated, steps, guidance):
    build._run(ctx, "vidcli generate", [sys.executable, "-c", "import os, time; "
               f"open({str(pids / 'generate')!r}, 'w').write(str(os.getpid())); time.sleep(120)"])

report._generate = generate
sys.exit(main(["gradient-check", "--quick"]))
"""


def test_sigterm_ends_the_checks_generate_command(tmp_path):
    """SIGTERM to gradient-check alone, while `vidcli generate` draws its videos: the command is ended with it
    (it would go on into a removed temporary folder); one line, exit 143."""
    from tests.toyworld.helpers import assert_sigterm_ends_commands

    pids = tmp_path / "pids"
    pids.mkdir()
    assert_sigterm_ends_commands(_LONG_CHECK, [str(tmp_path / "build"), str(pids)], pids, 1,
                                 message="terminated: the build's finished stages are kept; the check itself")
