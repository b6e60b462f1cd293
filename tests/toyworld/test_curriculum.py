"""The toy critic's curriculum (``python -m vidcli.toyworld critic``): its pieces against hand-computed
values, and the run's stages, cache and errors on a few steps each."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from tests.toyworld.helpers import assert_workers_end_with_their_parent

TINY = dict(text_short=2, text_mix=2, text_items=24, eyes=2, joint=2, joint_items=16, test=8, calib=1)


def test_cell_weights_share_an_object_between_the_merged_tokens_it_covers():
    from vidcli.toyworld.curriculum.critic import cell_weights
    from vidcli.toyworld.scene import Scene, Thing

    # A square's box is 9 px wide (HALF − 0.5 on each side). Centred at (12, 12.5) it covers
    # x 7.5–16.5 (0.5, 8 and 0.5 px of the 8-px cells 0, 1, 2) and y 8–17 (8 px of cell 1, 1 of cell 2).
    square = Thing("square", "red", "still", 12.0, 12.5)
    weights = cell_weights(Scene((square,)), square, np.array([0])).reshape(4, 4)
    x = np.array([0.5, 8, 0.5, 0]) / 9
    y = np.array([0, 8, 1, 0]) / 9
    np.testing.assert_allclose(weights, np.outer(y, x), atol=1e-9)
    # Moving right over the clip (10 px from the first to the last frame): the last frame's
    # weight sits two cells further right in the same row band.
    moving = replace(square, motion="right", x=8.0, y=12.0)
    first = cell_weights(Scene((moving,)), moving, np.array([0])).reshape(4, 4)
    last = cell_weights(Scene((moving,)), moving, np.array([8])).reshape(4, 4)
    assert first.sum(axis=0).argmax() in (0, 1) and last.sum(axis=0).argmax() == 2
    assert abs(first.sum() - 1) < 1e-9 and abs(last.sum() - 1) < 1e-9


def test_group_frames_pairs_the_picked_frames_as_the_temporal_patches_do():
    from vidcli.toyworld.curriculum.critic import group_frames

    assert [g.tolist() for g in group_frames(np.array([0, 2, 4, 6, 8]))] == [[0, 2], [4, 6], [8, 8]]
    assert [g.tolist() for g in group_frames(np.array([0, 1, 2, 3]))] == [[0, 1], [2, 3]]


def test_text_items_state_what_the_captions_say():
    """The text stage's questions are true exactly when every stated fact is in the scene: the
    short form's condition read back from the caption, and the context holds each video's caption."""
    from vidcli.toyworld.curriculum.critic import SHORT_QUESTION, TEXT_MIX, _plain_clip, context_text, draw_items
    from vidcli.toyworld.language import caption, read_facts, scene_facts

    pairs = draw_items(np.random.default_rng(0), 300, TEXT_MIX, lambda scene, rng: _plain_clip(scene))
    forms = {item.form for item, _ in pairs}
    assert forms == {"ta", "vanilla", "caption", "revise_first", "revise_none"}
    short = [(item, scenes) for item, scenes in pairs if item.question.startswith("Is it true that")]
    assert short and 0.25 < np.mean([item.label for item, _ in short]) < 0.75
    for item, (scene,) in short:
        condition = item.question[len(SHORT_QUESTION.split("{")[0]):-1]
        assert item.label == (read_facts(condition) <= set(scene_facts(scene)))
    for item, scenes in pairs:
        text = context_text(scenes)
        assert all(caption(s) in text for s in scenes)
        if item.form == "caption":
            assert item.explanation == caption(scenes[0])
    labels = [item.label for item, _ in pairs if item.form != "caption"]
    assert 0.3 < np.mean(labels) < 0.7


def test_the_curriculum_runs_its_stages_once_and_saves_a_loadable_critic(tmp_path):
    """A few steps of each stage: text and eyes (beside it), then joint and the measurements; the folder
    loads as drf-tune's --vlm; a second call finds every stage done; a lost stage is run again alone."""
    from vidcli.rewards.vlm import VLMScorer
    from vidcli.toyworld.curriculum.critic import PATCH, Sizes, train_curriculum

    sizes = Sizes(**TINY)
    root = tmp_path / "cur"
    state = train_curriculum(root, quick=True, sizes=sizes)
    assert set(state["stages"]) == {"text", "eyes", "joint"}
    measured = state["stages"]["joint"]["measured"]
    assert measured["count"] == 8 and 0 <= measured["accuracy"] <= 1 and "spearman" in measured["calibration"]
    assert set(state["stages"]["eyes"]["held_out_read"]) == {"shape", "colour", "motion", "tone", "pattern", "camera"}
    scorer = VLMScorer.from_pretrained(root / "critic")
    assert scorer.model.config.vision_config.patch_size == PATCH
    assert scorer.processor.video_processor.patch_size == PATCH
    # The joint critic has the eyes stage's tower (then trained on) and the text stage's words.
    weights = (root / "critic" / "model.safetensors").stat().st_mtime_ns
    again = train_curriculum(root, quick=True, sizes=sizes)
    assert again == state and (root / "critic" / "model.safetensors").stat().st_mtime_ns == weights
    saved = json.loads((root / "critic.json").read_text())
    del saved["stages"]["joint"]
    (root / "critic.json").write_text(json.dumps(saved))
    redone = train_curriculum(root, quick=True, sizes=sizes)
    assert redone["stages"]["text"] == state["stages"]["text"]
    assert (root / "critic" / "model.safetensors").stat().st_mtime_ns != weights


def test_the_critic_command_refuses_a_folder_that_holds_something_else(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    done = subprocess.run([sys.executable, "-m", "vidcli.toyworld", "critic", str(tmp_path), "--quick"],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "holds no curriculum run" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_error_in_the_text_stage_stops_the_eyes_stage_and_records_neither(tmp_path, monkeypatch):
    from vidcli.toyworld.curriculum import critic as cur

    def broken(*args, **kwargs):
        raise ValueError("text data broken")

    monkeypatch.setattr(cur, "train_text", broken)
    root = tmp_path / "cur"
    with pytest.raises(ValueError, match="text data broken"):
        cur.train_curriculum(root, quick=True, sizes=cur.Sizes(**TINY))
    assert json.loads((root / "critic.json").read_text())["stages"] == {}


def test_an_error_in_the_eyes_process_keeps_the_finished_text_stage(tmp_path):
    """The eyes stage fails in its own process (nothing to measure it on: ``test=0``); its error is
    raised here, the text stage that finished beside it is kept, nothing after it is run."""
    from vidcli.toyworld.curriculum import critic as cur

    root = tmp_path / "cur"
    with pytest.raises(ValueError, match="non-empty"):
        cur.train_curriculum(root, quick=True, sizes=cur.Sizes(**{**TINY, "test": 0}))
    stages = json.loads((root / "critic.json").read_text())["stages"]
    assert set(stages) == {"text"}


def test_the_eyes_process_ends_when_the_run_is_killed_outright(tmp_path):
    """SIGKILL (or SIGTERM) of the command leaves it no chance to stop its eyes process: that process
    watches its parent and ends on its own, instead of training on for an hour into the same folder."""
    long = dict(TINY, eyes=100000, text_mix=100000)
    code = ("import sys; from vidcli.toyworld.curriculum.critic import Sizes, train_curriculum\n"
            "if __name__ == '__main__':\n"
            f"    train_curriculum(sys.argv[1], quick=True, sizes=Sizes(**{long!r}))\n")
    script = tmp_path / "run.py"
    script.write_text(code)
    assert_workers_end_with_their_parent(script, str(tmp_path / "cur"))


def test_an_error_in_the_joint_stage_leaves_no_critic_under_the_final_name(tmp_path, monkeypatch):
    """The joint stage trains and is measured under DIR/critic.partial: a failure there (here in the
    measurements) leaves no DIR/critic that a user could take for the result; the first two stages stay."""
    from vidcli.toyworld.curriculum import critic as cur

    def broken(*args, **kwargs):
        raise ValueError("measurement broken")

    monkeypatch.setattr(cur, "measure", broken)
    root = tmp_path / "cur"
    with pytest.raises(ValueError, match="measurement broken"):
        cur.train_curriculum(root, quick=True, sizes=cur.Sizes(**TINY))
    assert not (root / "critic").exists()
    assert set(json.loads((root / "critic.json").read_text())["stages"]) == {"text", "eyes"}
