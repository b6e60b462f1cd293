"""The toy-world report's arithmetic: paired gains, curves from rollouts, the last line."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from vidcli.toyworld.report import last_line, paired_gain, plot_curves, training_curve


def test_paired_gain_is_the_mean_per_request_difference_with_a_t_interval():
    base = {"a": {"reward": 1.0}, "b": {"reward": 2.0}, "c": {"reward": 0.5}}
    runs = [{"a": {"reward": 2.0}, "b": {"reward": 2.0}, "c": {"reward": 1.5}},
            {"a": {"reward": 1.0}, "b": {"reward": 3.0}, "c": {"reward": 0.5}}]
    gain = paired_gain(base, runs, "reward")
    # per request, mean over the two runs minus base: a 0.5, b 0.5, c 0.5
    assert gain["n"] == 3 and gain["mean"] == pytest.approx(0.5) and gain["std"] == pytest.approx(0.0)
    runs[1]["c"]["reward"] = 2.5  # c: (1.5 + 2.5) / 2 - 0.5 = 1.5
    gain = paired_gain(base, runs, "reward")
    diffs = [0.5, 0.5, 1.5]
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert gain["mean"] == pytest.approx(mean) and gain["std"] == pytest.approx(std)
    assert gain["half_width"] == pytest.approx(4.302652729911275 * std / math.sqrt(3))  # t(0.975, 2)


def test_paired_gain_leaves_out_requests_without_a_value_in_every_run():
    base = {"a": {"user": 0.5}, "b": {"user": None}, "c": {"user": 0.0}}
    runs = [{"a": {"user": 1.0}, "b": {"user": 1.0}, "c": {"user": 1.0}}, {"a": {"user": 1.0}, "c": {"user": None}}]
    gain = paired_gain(base, runs, "user")
    assert gain["n"] == 1 and gain["mean"] == pytest.approx(0.5) and gain["ci95"] is None


def test_contradiction_trade_groups_answers_by_contradiction_before_and_after():
    from vidcli.toyworld.report import contradiction_trade, reade_markdown

    base = {"a": {"contra": 1.0, "user": 1.0, "supp": 0.5}, "b": {"contra": 1.0, "user": 0.5, "supp": 0.5},
            "c": {"contra": 0.0, "user": 0.5, "supp": 0.25}, "d": {"contra": None, "user": 0.0, "supp": 0.0}}
    runs = [{"a": {"contra": 0.0, "user": 0.5, "supp": 0.5}, "b": {"contra": 1.0, "user": 0.5, "supp": 0.75},
             "c": {"contra": 1.0, "user": 1.0, "supp": 0.5}, "d": {"contra": 0.0, "user": 1.0, "supp": 1.0}},
            {"a": {"contra": 0.0, "user": 0.0, "supp": 0.25}, "b": {"contra": 0.0, "user": 0.5, "supp": 0.5},
             "c": {"contra": 0.0, "user": 0.5, "supp": 0.25}}]
    trade = contradiction_trade(base, runs)
    # yes -> no: a in both runs (user -0.5 and -1.0; supp 0 and -0.25) and b in the second (0, 0); d has no start value
    assert [(r["before"], r["after"], r["answers"]) for r in trade] == [(1, 1, 1), (1, 0, 3), (0, 1, 1), (0, 0, 1)]
    assert trade[1]["user"] == pytest.approx(-0.5) and trade[1]["supp"] == pytest.approx(-0.25 / 3)
    assert (trade[0]["user"], trade[0]["supp"]) == (0.0, 0.25) and (trade[2]["user"], trade[2]["supp"]) == (0.5, 0.25)
    section = {"settings": {"steps": 1, "lr": 1e-4, "num_generations": 8, "temperature": 0.7, "seeds": [0],
                            "render_steps": 20, "guidance": 5.0},
               "heldout": 4, "table": {}, "gain": {p: {"mean": None} for p in ("reward", "format", "user", "detail",
                                                                              "supp", "contra", "video")},
               "per_seed_reward": [], "per_seed_video": [], "video_bounds": {}, "contradiction_trade": trade}
    words = "\n".join(reade_markdown(section))
    assert "| yes → no | 3 | -0.500 | -0.083 |" in words and "| no → yes | 1 | +0.500 | +0.250 |" in words
    del section["contradiction_trade"]  # a report.json written before the table existed still renders
    assert "Coverage against consistency" not in "\n".join(reade_markdown(section))


def test_training_curve_and_its_plot(tmp_path):
    rows = [{"step": 1, "reward": 1.0, "parts": {"format": 1.0}, "completion": "x\u2028y\x1cz"},
            {"step": 1, "reward": 0.0, "parts": {"format": 0.2}},
            {"step": 2, "reward": 3.0, "parts": {"format": 1.0}}, {"step": 2, "reward": 2.0, "parts": {"format": 1.0}}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # as the trainers write it
    (tmp_path / "rollouts.jsonl").write_text(text, encoding="utf-8")
    curve = training_curve(tmp_path)
    assert curve == [(1, 0.5, 0.5), (2, 2.5, 1.0)]
    plot_curves({"run": [(0, 1.0), (30, 1.5)]}, {"run": curve}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_last_line_names_the_gains_and_their_intervals():
    result = {"reade": {"gain": {"reward": {"n": 20, "mean": 0.9, "ci95": [0.8, 1.0]},
                                 "video": {"n": 20, "mean": 0.25, "ci95": [0.05, 0.45]}}},
              "drf": {"gain": {"score": {"n": 16, "mean": -0.0125, "ci95": [-0.1, 0.075]}}},
              "revise": {"gain": {"sft": {"score": {"n": 8, "mean": 0.5, "ci95": [0.4, 0.6]}},
                                  "uso": {"score": {"n": 8, "mean": 0.125, "ci95": [-0.02, 0.27]}}}}}
    line = last_line(result)
    assert line == ("toyworld: drf -0.013 [-0.100, +0.075] (n=16), revise +0.125 [-0.020, +0.270] (n=8), "
                    "grpo +0.250 [+0.050, +0.450] (n=20) (oracle adherence gain, 95% CI)")


def test_heldout_curve_scores_each_checkpoint_before_the_end_once(tmp_path, monkeypatch):
    from dataclasses import replace

    from vidcli.toyworld import report

    run = tmp_path / "run"
    for step in (60, 30, 20):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    (run / "checkpoint-30.partial").mkdir()  # not a checkpoint
    scored = []

    def fake_scores(ctx, model, out, s):
        scored.append(model)
        return {"a": {"reward": float(len(scored))}, "b": {"reward": None}}

    monkeypatch.setattr(report, "heldout_scores", fake_scores)
    settings = replace(report.READE_FULL, steps=60)
    curve = report.heldout_curve(None, run, tmp_path / "eval", settings, {"a": {"reward": 0.5}},
                                 {"a": {"reward": 3.0}, "b": {"reward": 1.0}})
    # the final model's scores are given (already measured); checkpoint-60 is the same step
    assert curve == [(0, 0.5), (20, 1.0), (30, 2.0), (60, 2.0)]
    assert scored == [run / "checkpoint-20", run / "checkpoint-30"]


def test_claim_reuses_a_folder_only_for_the_same_inputs(tmp_path):
    from vidcli.toyworld.report import INPUTS, StaleOutput, claim

    run, scores = tmp_path / "run", tmp_path / "scores"
    assert claim(run, {"steps": 20, "seeds": (0, 1)}, derived=False) is False  # first use: recorded
    (run / "vidcli.json").write_text("{}")
    assert claim(run, {"steps": 20, "seeds": (0, 1)}, derived=False) is True  # tuples read back as lists
    with pytest.raises(StaleOutput, match=r"other steps \(steps: 20\); remove it or choose another OUT"):
        claim(run, {"steps": 60, "seeds": (0, 1)}, derived=False)
    assert (run / "vidcli.json").exists()  # a training run is never removed
    assert claim(scores, {"model": "a"}, derived=True) is False
    (scores / "scored.jsonl").write_text("old\n")
    assert claim(scores, {"model": "b"}, derived=True) is False  # derived results of another model: redone
    assert not (scores / "scored.jsonl").exists()
    assert json.loads((scores / INPUTS).read_text()) == {"model": "b"}
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "checkpoint-10").mkdir()
    with pytest.raises(StaleOutput, match="unknown settings"):
        claim(legacy, {"steps": 20}, derived=False)


def test_a_report_into_an_out_of_other_settings_stops_with_one_line(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from vidcli.toyworld import __main__ as cli
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    calls = []
    monkeypatch.setattr(report, "_vidcli", lambda ctx, *args: calls.append(args))
    ctx = Context(tmp_path / "build", 0, True, None)
    out = tmp_path / "out" / "grpo-seed0"
    report.grpo(ctx, tmp_path / "sft", out, report.READE_QUICK, 0)
    (out / "vidcli.json").write_text("{}")
    assert len(calls) == 1
    report.grpo(ctx, tmp_path / "sft", out, report.READE_QUICK, 0)  # finished, same inputs: reused
    assert len(calls) == 1
    with pytest.raises(report.StaleOutput, match="other lr, steps"):
        report.grpo(ctx, tmp_path / "sft", out, replace(report.READE_QUICK, steps=60, lr=1e-3), 0)
    # Runs recorded before --grad-accum was a setting took one request per step: they stay reusable at 1 only;
    # which fresh requests are scored afterwards is no input of the run.
    report.grpo(ctx, tmp_path / "sft", out, replace(report.READE_QUICK, fresh=400, fresh_seed=3), 0)
    with pytest.raises(report.StaleOutput, match="other grad_accum"):
        report.grpo(ctx, tmp_path / "sft", out, replace(report.READE_QUICK, grad_accum=4), 0)
    assert calls[0][calls[0].index("--grad-accum") + 1] == "1"
    report.grpo(ctx, tmp_path / "sft", tmp_path / "out" / "four", replace(report.READE_QUICK, grad_accum=4), 0)
    assert calls[-1][calls[-1].index("--grad-accum") + 1] == "4"

    def stale(*args, **kwargs):
        raise report.StaleOutput(f"{out} was made with other steps (steps: 20); remove it or choose another OUT")

    monkeypatch.setattr(report, "report", stale)
    assert cli.main(["report", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_model_identity_changes_when_the_weights_are_rewritten(tmp_path):
    import os

    from vidcli.toyworld.report import model_identity

    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    before = model_identity(tmp_path)
    os.utime(tmp_path / "model.safetensors", ns=(1, 1))
    after = model_identity(tmp_path)
    assert after != before and after["weights"][0][:2] == ["model.safetensors", 10]


@pytest.mark.parametrize("failure, code, start", [
    ("command", 1, "error: vidcli grpo failed (exit 2): error: --lr must be positive"),
    ("interrupt", 130, "interrupted: finished stages and runs are kept"),
])
def test_a_failed_command_or_ctrl_c_in_the_report_is_one_line(tmp_path, monkeypatch, capsys, failure, code, start):
    from vidcli.toyworld import __main__ as cli
    from vidcli.toyworld import report
    from vidcli.toyworld.build import CommandFailed

    def broken(*args, **kwargs):
        if failure == "command":
            raise CommandFailed("vidcli grpo failed (exit 2): error: --lr must be positive")
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "report", broken)
    assert cli.main(["report", str(tmp_path / "out")]) == code
    err = capsys.readouterr().err
    assert err.startswith(start) and err.count("\n") == 1 and "Traceback" not in err


def test_a_command_that_fails_under_the_build_raises_with_its_own_message(tmp_path):
    from vidcli.toyworld.build import CommandFailed, Context, _vidcli

    ctx = Context(tmp_path, 0, True, None)
    with pytest.raises(CommandFailed, match=r"vidcli score failed \(exit 1\): .*missing.jsonl: input file not found"):
        _vidcli(ctx, "score", "--metric", "format", str(tmp_path / "missing.jsonl"))


def test_drf_reward_curve_is_the_negated_loss_per_step_and_plots(tmp_path):
    from vidcli.toyworld.report import plot_drf, reward_curve

    two = [{"dim": "TA", "key": "objects", "loglik": -1.5}, {"dim": "TA", "key": "camera", "loglik": -2.0}]
    rows = [{"step": 1, "id": "a", "loss": 3.5, "queries": two},
            {"step": 2, "id": "b", "loss": 0.5, "queries": [{"dim": "vanilla", "key": "prompt", "logp_yes": -0.5}]}]
    (tmp_path / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    curve = reward_curve(tmp_path)
    assert curve == [(1, -1.75), (2, -0.5)]  # per question: the sum over a caption's questions, divided
    plot_drf({"rich, seed 0": curve}, {"rich, seed 0": [(0, 0.4), (2, 0.5)]}, tmp_path / "drf.png")
    assert (tmp_path / "drf.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_scores_read_the_generated_videos_against_their_captions(tmp_path, monkeypatch):
    """`vidcli generate` stood in for by renders: each caption's own scene scores 1, another scene's less;
    the scores are kept with the folder's inputs and reused."""
    from vidcli.media import write_video
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context
    from vidcli.toyworld.scene import FPS, Scene, render
    from vidcli.toyworld.world import write_world

    world = tmp_path / "build" / "world"
    write_world(world, seed=3, count=10)
    scenes = {r["id"]: Scene.from_dict(r["scene"]) for r in map(json.loads, (world / "scenes.jsonl").open())}
    drf = [json.loads(line) for line in (world / "drf.jsonl").open()]
    (world / "drf.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in drf), encoding="utf-8")
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.safetensors").write_bytes(b"x")
    calls = []

    def fake_generate(ctx, *args):
        calls.append(args)
        assert args[0] == "generate" and args[args.index("--batch-size") + 1] == str(report.GENERATE_BATCH)
        assert report.FOLD in args
        captions, out = Path(args[args.index("--model") + 2]), Path(args[args.index("-o") + 1])
        videos = out.parent / "generated.videos"
        videos.mkdir()
        rows = []
        for n, record in enumerate(map(json.loads, captions.open())):
            shown = record["id"] if n % 2 == 0 else drf[(n + 1) % len(drf)]["id"]  # odd ones: another scene
            write_video(videos / f"{record['id']}.mp4", render(scenes[shown]), FPS)
            rows.append(dict(record, output={"video": f"generated.videos/{record['id']}.mp4"}))
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    monkeypatch.setattr(report, "_vidcli", fake_generate)
    ctx = Context(tmp_path / "build", 0, True, None)
    settings = report.DrfSettings(steps=4, seeds=(0,), heldout=6, lr=1e-4)
    scores = report.oracle_scores(ctx, model, tmp_path / "eval", settings)
    assert list(scores) == [r["id"] for r in drf[:6]]
    own = [scores[r["id"]]["score"] for r in drf[0:6:2]]
    other = [scores[r["id"]]["score"] for r in drf[1:6:2]]
    assert own == [1.0, 1.0, 1.0] and max(other) < 1.0
    assert all(0.0 <= v <= 1.0 for row in scores.values() for v in row.values())
    assert all(row["clean"] == 1.0 for row in scores.values())  # renders: no visual defect
    assert all(row["plausible"] == 1.0 for row in scores.values())  # and no physical error
    assert report.oracle_scores(ctx, model, tmp_path / "eval", settings) == scores and len(calls) == 1


def test_request_facts_are_what_the_user_and_the_conditions_ask_for():
    """U and S of the key information, not Z: the gold caption's colour and background are not asked for."""
    from vidcli.toyworld.language import Fact
    from vidcli.toyworld.report import request_facts

    record = {"key_info": {
        "user": {"objects": [{"name": "triangle", "attributes": ["green"]}], "actions": ["the triangle stays still"],
                 "camera": [], "style": []},
        "supplementary": {"objects": [], "actions": [], "camera": ["pans left"], "style": []},
        "imaginative": {"objects": [{"name": "triangle", "attributes": ["green"]},
                                    {"name": "background", "attributes": ["dark", "plain"]}],
                        "actions": ["the triangle stays still"], "camera": ["pans left"], "style": []}}}
    assert request_facts(record) == {Fact("object", "triangle", None), Fact("colour", "triangle", "green"),
                                     Fact("motion", "triangle", "still"), Fact("camera", None, "left")}


def test_rendered_scores_read_each_prompts_video_against_the_request(tmp_path, monkeypatch):
    """`vidcli generate` stood in for by renders: a prompt whose video is the request's own scene scores 1,
    another scene less, a missing prompt 0 without a video; reused for the same prompts, redone for others."""
    from vidcli.media import write_video
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context
    from vidcli.toyworld.scene import FPS, SHAPES, Scene, Thing, place, render
    from vidcli.toyworld.world import write_world

    world = tmp_path / "build" / "world"
    write_world(world, seed=5, count=10)
    scenes = {r["id"]: Scene.from_dict(r["scene"]) for r in map(json.loads, (world / "scenes.jsonl").open())}
    requests = [json.loads(line) for line in (world / "requests.jsonl").open()][:6]
    (tmp_path / "build" / "generator" / "transformer").mkdir(parents=True)
    (tmp_path / "build" / "generator" / "transformer" / "w.safetensors").write_bytes(b"x")
    calls = []

    def fake_generate(ctx, *args):
        calls.append(args)
        assert args[0] == "generate" and Path(args[args.index("--model") + 1]) == tmp_path / "build" / "generator"
        prompts, out = Path(args[args.index("--model") + 2]), Path(args[args.index("-o") + 1])
        (out.parent / "videos").mkdir(exist_ok=True)
        rows = []
        for record in map(json.loads, prompts.open()):
            scene = record["prompt"]  # the stand-in "generator" renders the scene the prompt names
            if scene.startswith("clutter "):  # ... with an object nobody asked for beside the one asked for
                one = scenes[scene.split()[1]]
                extra = next(shape for shape in SHAPES if shape != one.things[0].shape)
                drawn = place(replace(one, things=one.things + (Thing(extra, one.things[0].colour, "still", 0, 0),)),
                              np.random.default_rng(0))
            else:
                drawn = scenes[scene]
            write_video(out.parent / "videos" / f"{record['id']}.mp4", render(drawn), FPS)
            rows.append(dict(record, output={"video": f"videos/{record['id']}.mp4"}))
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    monkeypatch.setattr(report, "_vidcli", fake_generate)
    ctx = Context(tmp_path / "build", 0, True, None)
    settings = report.READE_QUICK
    own = {r["id"]: r["scene_id"] for r in requests}
    own[requests[5]["id"]] = None
    scores = report.rendered_scores(ctx, requests, own, tmp_path / "r", settings)
    assert list(scores) == [r["id"] for r in requests]
    assert [scores[r["id"]]["video"] for r in requests] == [1.0] * 5 + [0.0]
    generated = [json.loads(line)["id"] for line in (tmp_path / "r" / "generated.jsonl").open()]
    assert generated == [r["id"] for r in requests[:5]]
    assert report.rendered_scores(ctx, requests, own, tmp_path / "r", settings) == scores and len(calls) == 1
    swapped = {r["id"]: requests[(i + 1) % 5]["scene_id"] for i, r in enumerate(requests)}
    other = report.rendered_scores(ctx, requests, swapped, tmp_path / "r", settings)
    assert len(calls) == 2 and all(0.0 <= row["video"] <= 1.0 for row in other.values())
    assert sum(row["video"] for row in other.values()) < 6 - 0.5
    (tmp_path / "r" / "adherence.jsonl").unlink()  # as if scored by an older measure: the kept videos are read
    assert report.rendered_scores(ctx, requests, swapped, tmp_path / "r", settings) == other and len(calls) == 2
    # clutter does not pay: the asked-for object as asked, plus one more -> all asked holds, half the objects belong
    single = next(r for r in requests[:5] if len(scenes[r["scene_id"]].things) == 1)
    cluttered = report.rendered_scores(ctx, [single], {single["id"]: f"clutter {single['scene_id']}"},
                                       tmp_path / "c", settings)
    assert cluttered[single["id"]] == {"video": 0.5, "recall": 1.0, "precision": 0.5}


def test_drf_section_runs_the_real_commands_on_the_quick_build(toy_build, toy_judge, tmp_path):
    """decompose → drf-tune (the build's critic as --vlm) → generate → oracle, at toy sizes; a rerun reuses all."""
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    root = toy_build[0]
    ctx = Context(root, 0, True, None, judge_url=toy_judge)
    settings = report.DrfSettings(steps=3, seeds=(0,), heldout=3, lr=1e-4, sampling_steps=4, checkpoints=1,
                                  dims_ablation=("TA,Phy,VQ",))
    section = report.drf_section(ctx, tmp_path, settings, workers=2)  # the two runs at once
    run = tmp_path / "drf-rich-seed0"
    info = json.loads((run / "vidcli.json").read_text())
    assert info["command"] == "drf-tune" and Path(info["arguments"]["vlm"]) == root / "critic"
    assert info["arguments"]["fold_text_padding"] is True
    decomposed = [json.loads(line) for line in (tmp_path / "records" / "drf.train.jsonl").open()]
    assert decomposed and all(q["dim"] == "TA" for r in decomposed for q in r["questions"] if q["reference"])
    # The dims ablation trains on records whose Phy and VQ questions have the toy judge's reference
    # answers on the world's renders ("no error", "no defect"), and asks all three kinds.
    referenced = [json.loads(line) for line in (tmp_path / "records-phy-vq" / "drf.train.jsonl").open()]
    answers = {(q["dim"], q["reference"]["answer"]) for r in referenced for q in r["questions"]}
    assert answers == {("TA", "Yes"), ("Phy", "No"), ("VQ", "No")}
    dims_run = tmp_path / "drf-rich-TA-Phy-VQ-seed0"
    assert json.loads((dims_run / "vidcli.json").read_text())["arguments"]["dims"] == ["TA", "Phy", "VQ"]
    asked = {q["dim"] for row in report._rows(dims_run / "rewards.jsonl") for q in row["queries"]}
    assert asked == {"TA", "Phy", "VQ"}
    assert [step for step, _ in section["reward_curves"]["rich, seed 0"]] == [1, 2, 3]
    # One checkpoint asked for: one saved (at ceil(3 / 2) = 2), none left just before the end to evaluate.
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2"]
    assert [step for step, _ in section["oracle_curves"]["rich, seed 0"]] == [0, 2, 3]
    assert section["gain"]["score"]["n"] == 3 and set(section["table"]) == {
        "base generator", "drf-tune --reward rich", "drf-tune --reward rich --dims TA,Phy,VQ (seed 0)"}
    base = section["table"]["base generator"]["score"]
    assert section["oracle_curves"]["rich, seed 0"][0][1] == base and 0.0 <= base <= 1.0
    scored = tmp_path / "eval" / "drf-rich-seed0" / "oracle.jsonl"
    # The held-out videos were made GENERATE_BATCH at a time, and their evaluation records it.
    inputs = json.loads((scored.parent / report.INPUTS).read_text())
    assert inputs["batch"] == report.GENERATE_BATCH and inputs["fold_text_padding"] is True
    before = scored.stat().st_mtime_ns
    assert report.drf_section(ctx, tmp_path, settings)["table"] == section["table"]
    assert scored.stat().st_mtime_ns == before


def test_trailing_mean_averages_each_point_with_the_ones_before_it():
    from vidcli.toyworld.report import trailing_mean

    points = [(1, 4.0), (2, 2.0), (3, 0.0), (4, 6.0)]
    assert trailing_mean(points, 2) == [4.0, 3.0, 1.0, 3.0]
    assert trailing_mean(points, 10) == [4.0, 3.0, 2.0, 3.0]


def test_edit_scores_read_each_edit_against_the_scene_it_should_give(tmp_path, monkeypatch):
    """`vidcli generate` stood in for by renders: the target scene's render scores 1, the source left as it
    was scores no accuracy; the source itself is the unedited row; scores are reused with their inputs."""
    from vidcli.media import write_video
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context
    from vidcli.toyworld.scene import FPS, Scene, render
    from vidcli.toyworld.world import write_world

    world = tmp_path / "build" / "world"
    write_world(world, seed=3, count=10)
    triplets = [json.loads(line) for line in (world / "triplets.jsonl").open()]
    (world / "triplets.test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in triplets), encoding="utf-8")
    model = tmp_path / "editor"
    (model / "transformer").mkdir(parents=True)
    (model / "transformer" / "weights.safetensors").write_bytes(b"x")
    calls = []

    def fake_generate(ctx, *args):
        calls.append(args)
        assert args[0] == "generate" and args[args.index("--batch-size") + 1] == str(report.GENERATE_BATCH)
        assert report.FOLD in args
        records, out = Path(args[args.index("--model") + 2]), Path(args[args.index("-o") + 1])
        videos = out.parent / "edited.videos"
        videos.mkdir()
        rows = []
        for n, record in enumerate(map(json.loads, records.open())):
            assert Path(record["source"]["video"]).is_file()
            scene = record["edit"]["target_scene" if n % 2 == 0 else "source_scene"]  # odd ones: not edited
            write_video(videos / f"{record['id']}.mp4", render(Scene.from_dict(scene)), FPS)
            rows.append(dict(record, output={"video": f"edited.videos/{record['id']}.mp4"}))
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    monkeypatch.setattr(report, "_vidcli", fake_generate)
    ctx = Context(tmp_path / "build", 0, True, None)
    settings = report.ReviseSettings(steps=2, seeds=(0,), heldout=6)
    scores = report.edit_scores(ctx, model, tmp_path / "eval", settings)
    assert list(scores) == [r["id"] for r in triplets[:6]]
    assert [scores[r["id"]]["score"] for r in triplets[0:6:2]] == [1.0, 1.0, 1.0]
    assert [scores[r["id"]]["accuracy"] for r in triplets[1:6:2]] == [0.0, 0.0, 0.0]
    assert all(row["score"] == row["accuracy"] * row["preservation"] for row in scores.values())
    assert report.edit_scores(ctx, model, tmp_path / "eval", settings) == scores and len(calls) == 1
    unedited = report.edit_scores(ctx, None, tmp_path / "unedited", settings)
    assert len(calls) == 1 and all(row["accuracy"] == 0.0 for row in unedited.values())


def test_revise_section_runs_the_real_commands_on_the_quick_build(toy_build, tmp_path):
    """revise-tune from the build's editor (the build's critic as --vlm), per objective → generate → oracle."""
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    root = toy_build[0]
    ctx = Context(root, 0, True, None)
    settings = report.ReviseSettings(steps=2, seeds=(0,), heldout=3, grad_accum=1, objectives=("sft", "uso"),
                                     sampling_steps=2, curve_heldout=2)
    section = report.revise_section(ctx, tmp_path, settings, workers=2)  # the two runs at once
    # The curves: the editor at step 0, the checkpoint saved half way (edited and read too), the final model,
    # all three on every second triplet (at most curve_heldout of the 3: the 1st and the 3rd); the table on all.
    def spread(rows):
        return [row["score"] for row in rows][::2]
    for objective in ("sft", "uso"):
        curve = section["oracle_curves"][f"{objective}, seed 0"]
        assert [step for step, _ in curve] == [0, 1, 2]
        final = report._rows(tmp_path / "eval" / f"{objective}-seed0" / "oracle.jsonl")
        half_way = report._rows(tmp_path / "eval" / f"{objective}-seed0" / "step1" / "oracle.jsonl")
        assert len(final) == 3 and [row["id"] for row in half_way] == [final[0]["id"], final[2]["id"]]
        editor = report._rows(tmp_path / "eval" / "editor" / "oracle.jsonl")
        assert curve[0][1] == pytest.approx(sum(spread(editor)) / 2)
        assert curve[1][1] == pytest.approx(sum(row["score"] for row in half_way) / 2)
        assert curve[2][1] == pytest.approx(sum(spread(final)) / 2)
    assert "The oracle curves read 2 of them, every second in the split's order" in "\n".join(
        report.revise_markdown(section))
    assert list(section["margin_curves"]) == ["uso, seed 0"]
    report.plot_revise(section["margin_curves"], section["oracle_curves"], tmp_path / "revise.png")
    assert (tmp_path / "revise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for objective in ("sft", "uso"):
        info = json.loads((tmp_path / f"{objective}-seed0" / "vidcli.json").read_text())
        assert info["command"] == "revise-tune" and info["arguments"]["objective"] == objective
        assert info["arguments"]["fold_text_padding"] is True
        assert Path(info["arguments"]["vlm"]) == root / "critic" and Path(info["arguments"]["model"]) == root / "editor"
        assert section["gain"][objective]["score"]["n"] == 3
    assert list(section["table"]) == ["source left unedited", "editor (start point)", "revise-tune --objective sft",
                                      "revise-tune --objective uso"]
    assert section["table"]["source left unedited"]["accuracy"] == 0.0
    assert all(0.0 <= v <= 1.0 for row in section["table"].values() for v in row.values())
    scored = tmp_path / "eval" / "uso-seed0" / "oracle.jsonl"
    before = scored.stat().st_mtime_ns
    assert report.revise_section(ctx, tmp_path, settings)["table"] == section["table"]
    assert scored.stat().st_mtime_ns == before
    assert "| revise-tune --objective uso |" in "\n".join(report.revise_markdown(section))


def test_at_once_keeps_the_jobs_order_and_runs_two_together():
    import threading
    import time

    from vidcli.toyworld.report import at_once

    running, most = set(), []
    lock = threading.Lock()

    def job(name: str, seconds: float):
        def run():
            with lock:
                running.add(name)
                most.append(len(running))
            time.sleep(seconds)
            with lock:
                running.discard(name)
            return name
        return run

    assert at_once([job("a", 0.3), job("b", 0.05), job("c", 0.05), job("d", 0.1)], 2) == ["a", "b", "c", "d"]
    assert max(most) == 2
    most.clear()
    assert at_once([job("a", 0.05), job("b", 0.05)], 1) == ["a", "b"] and max(most) == 1


def test_at_once_stops_starting_jobs_after_a_failure_and_raises_it():
    import time

    from vidcli.toyworld.build import CommandFailed
    from vidcli.toyworld.report import at_once

    started = []

    def job(name: str, seconds: float, fail: bool = False):
        def run():
            started.append(name)
            time.sleep(seconds)
            if fail:
                raise CommandFailed(f"vidcli {name} failed")
            return name
        return run

    with pytest.raises(CommandFailed, match="vidcli b failed"):
        at_once([job("a", 0.4), job("b", 0.05, fail=True), job("c", 0.0), job("d", 0.0)], 2)
    assert started == ["a", "b"]  # a ran to its end; c and d never started


def test_at_once_on_ctrl_c_starts_nothing_more_and_lets_the_running_jobs_end():
    import signal
    import threading
    import time

    from vidcli.toyworld.report import at_once

    started, ended = [], []
    main = threading.main_thread().ident

    def job(name: str, seconds: float, interrupt: bool = False):
        def run():
            started.append(name)
            if interrupt:  # Ctrl-C reaches the main thread while it waits for the jobs
                time.sleep(0.1)
                signal.pthread_kill(main, signal.SIGINT)
            time.sleep(seconds)
            ended.append(name)
            return name
        return run

    # Python's own Ctrl-C handler: a suite started in the background (`cmd &`) runs with SIGINT ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            at_once([job("a", 0.2, interrupt=True), job("b", 0.4), job("c", 0.0), job("d", 0.0)], 2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert started == ["a", "b"] and sorted(ended) == ["a", "b"]


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_report_refuses_a_jobs_count_below_one_in_one_line(tmp_path, capsys, jobs):
    from vidcli.toyworld import __main__ as cli

    with pytest.raises(SystemExit) as stopped:
        cli.main(["report", str(tmp_path / "out"), "--jobs", jobs])
    assert stopped.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert f"--jobs: must be a whole number of at least 1, got {jobs!r}" in err and "Traceback" not in err


def _fake_critic(folder: Path, weights: bytes = b"w") -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_runs_read_the_critic_given_and_record_which(tmp_path, monkeypatch):
    """``--critic``: drf-tune and revise-tune get it as ``--vlm``; each run records its folder and weights, so
    the same OUT with another critic stops with one line; without it the runs read the build's critic and
    record what they recorded before (reports made then are reused)."""
    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    calls = []
    monkeypatch.setattr(report, "_vidcli", lambda ctx, *args: calls.append(args))
    build = tmp_path / "build"

    def vlm(args):
        return args[args.index("--vlm") + 1]

    report.drf_tune(Context(build, 0, True, None), tmp_path / "drf.jsonl", tmp_path / "own", report.DRF_QUICK, 0,
                    "rich")
    report.revise_tune(Context(build, 0, True, None), tmp_path / "own-revise", report.REVISE_QUICK, 0, "uso")
    assert [vlm(c) for c in calls] == [str(build / "critic")] * 2
    recorded = json.loads((tmp_path / "own" / report.INPUTS).read_text())
    assert "critic" not in recorded and recorded["command"] == "drf-tune"

    first = _fake_critic(tmp_path / "cur" / "critic")
    ctx = report.ReportContext(build, 0, True, None, critic=first)
    out = tmp_path / "out"
    report.drf_tune(ctx, tmp_path / "drf.jsonl", out / "drf", report.DRF_QUICK, 0, "rich")
    report.revise_tune(ctx, out / "revise", report.REVISE_QUICK, 0, "uso")
    assert [vlm(c) for c in calls[2:]] == [str(first)] * 2
    assert json.loads((out / "drf" / report.INPUTS).read_text())["critic"]["path"] == str(first)

    other = _fake_critic(tmp_path / "cur2" / "critic", b"other")
    for run in (lambda c: report.drf_tune(c, tmp_path / "drf.jsonl", out / "drf", report.DRF_QUICK, 0, "rich"),
                lambda c: report.revise_tune(c, out / "revise", report.REVISE_QUICK, 0, "uso")):
        with pytest.raises(report.StaleOutput, match="other critic"):
            run(report.ReportContext(build, 0, True, None, critic=other))
        with pytest.raises(report.StaleOutput, match="other critic"):
            run(Context(build, 0, True, None))
    assert len(calls) == 4


def test_the_report_names_a_critic_given_in_its_sections():
    from vidcli.toyworld.report import (
        DRF_PARTS,
        DRF_QUICK,
        REVISE_PARTS,
        REVISE_QUICK,
        drf_markdown,
        paired_gain,
        revise_markdown,
    )

    def gains(parts):
        base = {"a": dict.fromkeys(parts, 0.5), "b": dict.fromkeys(parts, 0.25)}
        tuned = [{"a": dict.fromkeys(parts, 0.75), "b": dict.fromkeys(parts, 0.25)}]
        return {part: paired_gain(base, tuned, part) for part in parts}

    drf = {"settings": asdict(DRF_QUICK), "heldout": 2, "table": {}, "gain": gains(DRF_PARTS), "ablation": {}}
    revise = {"settings": asdict(REVISE_QUICK), "heldout": 2, "table": {}, "gain": {"uso": gains(REVISE_PARTS)}}
    for markdown, section in ((drf_markdown, drf), (revise_markdown, revise)):
        assert "with the toy critic as `--vlm`" in markdown(section)[2]
        named = markdown({**section, "critic": "/runs/cur/critic"})[2]
        assert "with the critic `/runs/cur/critic` as `--vlm`" in named


@pytest.mark.parametrize("given", ["missing", "empty", "no-weights"])
def test_report_refuses_a_critic_that_is_not_a_saved_model_in_one_line(tmp_path, capsys, given):
    from vidcli.toyworld import __main__ as cli

    folder = tmp_path / given
    if given != "missing":
        folder.mkdir()
    if given == "no-weights":
        (folder / "config.json").write_text("{}")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["report", str(tmp_path / "out"), "--critic", str(folder)])
    assert stopped.value.code == 2 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err
    assert f"--critic: {folder}: not a saved critic" in err and "Traceback" not in err


def test_the_sections_share_the_cores_and_a_failure_in_one_halts_the_others(tmp_path, monkeypatch):
    """The report's three sections go at once: their commands take the report's cores as they come (never
    more at once than there are), and once one command fails no command of any section starts; the
    failure, not the halt it caused, is what the report raises."""
    import threading
    import time

    from vidcli.toyworld import report
    from vidcli.toyworld.build import CommandFailed

    lock, running, most, started = threading.Lock(), [0], [0], []

    def fake(ctx, *args):
        with lock:
            started.append(args[0])
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        if args[0] == "broken":
            broken_runs.set()  # it holds the only core: the other sections' commands queue for it
            time.sleep(0.2)
            raise CommandFailed("vidcli broken failed (exit 1): error: no such file")

    monkeypatch.setattr(report, "_vidcli", fake)
    broken_runs = threading.Event()

    def section(ctx, names, after=None):
        def job(name):
            def commands():
                if after is not None:
                    after.wait(10)
                return [report._command(ctx, f"{name}-{i}") for i in range(3)] and name
            return commands
        return lambda: report.at_once([job(n) for n in names], None, ctx.stop)

    ctx = report.ReportContext(tmp_path, 0, True, None, cores=report.Cores(2))
    assert report.at_once([section(ctx, "ab"), section(ctx, "cde"), section(ctx, "f")], None, ctx.stop) == [
        ["a", "b"], ["c", "d", "e"], ["f"]]
    assert most[0] == 2 and len(started) == 18

    started.clear()
    ctx = report.ReportContext(tmp_path, 0, True, None, cores=report.Cores(1))

    def breaks():
        report._command(ctx, "broken")

    with pytest.raises(CommandFailed, match="vidcli broken failed"):
        report.at_once([section(ctx, "ab", broken_runs), lambda: report.at_once([breaks], None, ctx.stop),
                        section(ctx, "c", broken_runs)], None, ctx.stop)
    assert started == ["broken"]  # the commands queued behind it never started
    with pytest.raises(report.Halted):
        report._command(ctx, "late")


def test_a_freed_core_goes_to_the_command_that_waited_longest(monkeypatch):
    """A thread that frees a core and asks again at once queues behind those already waiting; a waiter
    stopped while it waits (Ctrl-C) leaves the queue and loses no core."""
    import threading
    import time

    from vidcli.toyworld.report import Cores

    cores, order = Cores(1), []
    cores.__enter__()  # this thread holds the only core

    def waiter(name):
        with cores:
            order.append(name)

    threads = []
    for name in ("first", "second"):
        threads.append(threading.Thread(target=waiter, args=(name,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while len(cores._waiting) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.001)
    assert len(cores._waiting) == 2
    cores.__exit__(None, None, None)
    with cores:  # asked again straight after freeing it: after both waiters
        order.append("again")
    for thread in threads:
        thread.join(10)
    assert order == ["first", "second", "again"]

    class Stopped(BaseException):
        pass

    stopped = Cores(1)
    stopped.__enter__()
    turn = threading.Event()
    turn.wait = lambda: (_ for _ in ()).throw(Stopped())  # the wait is interrupted
    monkeypatch.setattr(threading, "Event", lambda: turn)
    with pytest.raises(Stopped):
        stopped.__enter__()
    monkeypatch.undo()
    assert not stopped._waiting
    stopped.__exit__(None, None, None)
    with stopped:  # the core came back: free again, nobody waits for it
        assert stopped._free == 0
    assert stopped._free == 1

    # Stopped just as the core was handed to it: it passes the core on instead of keeping it.
    handed = Cores(1)
    handed.__enter__()
    turn = threading.Event()

    def given_then_stopped():
        handed.__exit__(None, None, None)  # the holder frees the core: it goes to this waiter
        assert turn.is_set() and not handed._waiting
        raise Stopped()

    turn.wait = given_then_stopped
    monkeypatch.setattr(threading, "Event", lambda: turn)
    with pytest.raises(Stopped):
        handed.__enter__()
    monkeypatch.undo()
    assert handed._free == 1 and not handed._waiting


def test_grpo_from_the_base_runs_its_own_steps(tmp_path, monkeypatch):
    """READE_FULL's GRPO-only ablation runs ``ablation_steps`` (its rollouts are never rewarded, so more
    steps cannot move it); the two seeds from the SFT start point run ``steps``, and only theirs are
    evaluated at the checkpoints."""
    from dataclasses import replace

    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    ran, curves, fresh = {}, [], []

    def fake_grpo(ctx, start, out, s, seed):
        ran[out.name] = (start.name, s.steps, s.grad_accum, seed)
        return out

    def fake_fresh(ctx, model, world, out, s):  # the start point's answers score 1, seed 0's 2, seed 1's 4
        fresh.append((model.name, world.name, out.relative_to(tmp_path).as_posix()))
        value = {"sft": 1.0, "grpo-seed0": 2.0, "grpo-seed1": 4.0}[model.name]
        return {"f1": {**{part: value for part in report.FRESH_PARTS}, "contra": float(model.name == "sft")},
                "f2": {**{part: value for part in report.FRESH_PARTS}, "contra": 1.0}}

    monkeypatch.setattr(report, "grpo", fake_grpo)
    monkeypatch.setattr(report, "fresh_world", lambda ctx, out, s: out / "world-seed1-400")
    monkeypatch.setattr(report, "fresh_scores", fake_fresh)
    scores = {"r1": {part: 1.0 for part in report.READE_PARTS}}
    monkeypatch.setattr(report, "heldout_scores", lambda ctx, model, out, s: dict(scores))
    monkeypatch.setattr(report, "rendered_heldout", lambda ctx, out, s: {"r1": {"video": 0.5}})
    monkeypatch.setattr(report, "rendered_scores", lambda ctx, requests, prompts, out, s: {"r1": {"video": 0.2}})
    monkeypatch.setattr(report, "heldout_curve", lambda ctx, run, out, s, base, final: curves.append(run.name) or [])
    monkeypatch.setattr(report, "training_curve",
                        lambda run: [(1, 0.0, 0.0), (2, 0.0 if "only" in run.name else 1.5, 0.5)])
    (tmp_path / "eval" / "sft").mkdir(parents=True)
    (tmp_path / "eval" / "sft" / "heldout.jsonl").write_text(
        json.dumps({"id": "r1", "instruction": "a red ball", "gold": {"dense": "a red ball"}}) + "\n")
    full = report.READE_FULL
    assert (full.steps, full.grad_accum, full.ablation_steps, full.fresh, full.fresh_seed) == (300, 1, 60, 400, 1)
    # The paper's batch, as a variant: the seeds take 4 requests per step, GRPO from the base stays at one.
    section = report.reade_section(Context(tmp_path / "build", 0, False, None), tmp_path,
                                   replace(full, seeds=(0, 1), steps=150, grad_accum=4), workers=2)
    assert ran == {"grpo-seed0": ("sft", 150, 4, 0), "grpo-seed1": ("sft", 150, 4, 1),
                   "grpo-only": ("base", 60, 1, 0)}
    assert sorted(curves) == ["grpo-seed0", "grpo-seed1"]
    # The fresh requests: answered by the start point and each seed's final model (not the GRPO-only run).
    assert sorted(fresh) == [(name, "world-seed1-400", f"eval/fresh/{name}") for name in
                             ("grpo-seed0", "grpo-seed1", "sft")]
    assert section["fresh"]["requests"] == 2
    assert section["fresh"]["table"]["SFT then GRPO"]["reward"] == 3.0
    assert section["fresh"]["gain"]["reward"]["mean"] == 2.0 and section["fresh"]["gain"]["reward"]["n"] == 2
    assert section["fresh"]["contradiction_trade"] == [  # f2 contradicts itself throughout, f1 stops
        {"before": 1, "after": 1, "answers": 2, "user": 2.0, "supp": 2.0},
        {"before": 1, "after": 0, "answers": 2, "user": 2.0, "supp": 2.0}]
    assert section["settings"]["ablation_steps"] == 60 and "GRPO only (from the base)" in section["table"]
    assert section["contradiction_trade"] == [{"before": 1, "after": 1, "answers": 2, "user": 0.0, "supp": 0.0}]
    words = "\n".join(report.reade_markdown(section))
    assert "150 steps of 4 requests, lr 0.0001" in words
    assert "GRPO only (from the base): 60 steps of one request, seed 0; none of its rollouts was rewarded" in words
    assert "On 2 fresh requests (a world of seed 1" in words and "- reward: +2.000" in words
    section["curves"]["GRPO only, seed 0"] = [(1, 0.0, 0.0), (2, 0.25, 0.1)]
    assert "GRPO only (from the base): 60 steps of one request, seed 0." in "\n".join(report.reade_markdown(section))


def test_fresh_requests_are_a_world_of_another_seed_answered_and_scored_by_the_real_commands(
        toy_build, toy_judge, tmp_path):
    """The fresh world is written once (a half-written one from an interrupted report is replaced); its requests,
    a camera condition among them, are answered by `vidcli interpret` reading the fresh world's media and scored by
    `vidcli score` with the toy judge; a second call reuses the scores."""
    from dataclasses import replace

    from vidcli.toyworld import report
    from vidcli.toyworld.build import Context

    ctx = Context(toy_build[0], 0, True, None, judge_url=toy_judge)
    settings = replace(report.READE_QUICK, fresh=3, max_tokens=48)
    (tmp_path / "world-seed1-3.partial").mkdir()
    (tmp_path / "world-seed1-3.partial" / "requests.jsonl").write_text("half", encoding="utf-8")
    world = report.fresh_world(ctx, tmp_path, settings)
    assert world.name == "world-seed1-3" and not (tmp_path / "world-seed1-3.partial").exists()
    requests = report._rows(world / "requests.jsonl")
    assert [r["id"] for r in requests] == ["w1-00000-request", "w1-00001-request", "w1-00002-request"]
    assert requests[2]["conditions"][0]["type"] == "camera" and (world / requests[2]["conditions"][0]["path"]).is_file()
    stamp = (world / "requests.jsonl").stat().st_mtime_ns
    assert report.fresh_world(ctx, tmp_path, settings) == world
    assert (world / "requests.jsonl").stat().st_mtime_ns == stamp
    scores = report.fresh_scores(ctx, ctx.interpreter / "sft", world, tmp_path / "eval", settings)
    assert sorted(scores) == [r["id"] for r in requests]
    assert all(set(row) == set(report.READE_PARTS) and row["reward"] is not None for row in scores.values())
    answered = report._rows(tmp_path / "eval" / "interpreted.jsonl")
    assert [r["id"] for r in answered] == [r["id"] for r in requests] and all("output" in r for r in answered)
    scored = tmp_path / "eval" / "scored.jsonl"
    before = scored.stat().st_mtime_ns
    assert report.fresh_scores(ctx, ctx.interpreter / "sft", world, tmp_path / "eval", settings) == scores
    assert scored.stat().st_mtime_ns == before


def test_a_stop_while_the_report_is_written_leaves_the_old_file_whole(tmp_path, monkeypatch):
    import os

    from vidcli.toyworld import report

    target = tmp_path / "report.json"
    target.write_text("old\n")
    real = os.fdopen

    class Interrupted:
        """A file that takes half of what it is given, then meets Ctrl-C."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Interrupted(real(fd, mode)))
    with pytest.raises(KeyboardInterrupt):
        report._write_text(target, "new and complete\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    report._write_text(target, "new and complete\n")
    assert target.read_text() == "new and complete\n" and not (tmp_path / "report.json.partial").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left either


# The report with each section replaced by one long command, driven through the CLI in a process of its own.
_LONG_REPORT = """
import sys
from pathlib import Path
from vidcli.toyworld import report as module
from vidcli.toyworld.build import _run
from vidcli.toyworld.__main__ import main

flags = Path(sys.argv[2])
root = Path(sys.argv[1]) / "build"
module.ensure_world = lambda seed, quick: (root, {"key": "k"})

def section(name):
    def run(ctx, out, settings, workers=None):
        _run(ctx, name, [sys.executable, "-c", "import os, sys, time; "
             f"open({str(flags)!r} + '/' + {name!r}, 'w').write(str(os.getpid())); time.sleep(120)"])
    return run

module.drf_section, module.reade_section, module.revise_section = map(section, ("drf", "reade", "revise"))
sys.exit(main(["report", str(Path(sys.argv[1]) / "out"), "--quick"]))
"""


def test_sigterm_ends_the_reports_running_commands(tmp_path):
    """SIGTERM to the report's process alone (a scheduler's time limit, `timeout`): the commands it is
    running are ended, not waited for, and none is left behind; one line, exit 143."""
    from tests.toyworld.helpers import assert_sigterm_ends_commands

    pids = tmp_path / "pids"
    pids.mkdir()
    assert_sigterm_ends_commands(_LONG_REPORT, [str(tmp_path), str(pids)], pids, 2)
