"""The SFT recipe on the tiny Qwen2.5-VL: loss, masking, dropout, freezing, LoRA, saving, resume."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vidcli.errors import InputError, MediaError
from vidcli.train.core import OptimConfig, RunConfig, seeded_uniform
from vidcli.train.interpreter_tuning import record_request
from vidcli.train.sft import SFTConfig, SFTRecipe, run_sft
from vidcli.train.sft_data import load_examples

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ANSWER = ("<answer>1. Dense caption: A {x} runs along the street.\n\n2. Main object caption: a {x}.\n\n"
          "3. Background caption: the street.\n\n4. Movement caption: runs along.\n\n"
          "5. Style caption: cinematic.\n\n6. Camera caption: The camera pans left.</answer>")


def cot_target(thing: str, intent: str | None = None) -> str:
    """A target as make-cot writes it: four labelled steps, then the answer."""
    steps = [f"Step 1 - Textual intent: {intent or f'The user wants a {thing}.'}",
             "Step 2 - Non-textual understanding: The camera pans left.",
             "Step 3 - Multimodal alignment: Nothing conflicts.", "Step 4 - Supplementary completion: A street."]
    return "<think>\n" + "\n\n".join(steps) + "\n</think>\n" + ANSWER.format(x=thing)


BLIND_DOG = cot_target("dog", "No text was given; the image suggests a dog.")


def write_data(folder: Path) -> dict[str, Path]:
    """Small images, a camera file and three JSONL files: CoT, camera-to-text, and one bad."""
    from PIL import Image

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate([(200, 30, 30), (30, 200, 30)]):
        Image.new("RGB", (56, 56), colour).save(media / f"img{i}.png")
    shutil.copy(Path(__file__).parents[1] / "examples" / "media" / "camera_dolly_pan.txt", media / "cam.txt")
    cot = [
        {"id": "a", "instruction": "make the dog run", "conditions": [{"type": "identity", "path": "media/img0.png"}],
         "cot": {"target": cot_target("dog"), "no_instruction": {"target": BLIND_DOG}}},
        {"id": "b", "instruction": "a cat in the room", "conditions": [{"type": "camera", "path": "media/cam.txt"}],
         "cot": {"target": cot_target("cat")}},
        {"id": "c", "instruction": "a red car drives through the city", "cot": {"target": cot_target("red car")}},
        {"id": "d", "instruction": "the robot waits",
         "conditions": [{"type": "image", "path": "media/img1.png"}, {"type": "camera", "path": "media/cam.txt"}],
         "cot": {"target": "<think>The user wants a robot.</think>" + ANSWER.format(x="robot")}},  # hand-made
    ]
    camera = [
        {"id": "c1", "conditions": [{"type": "camera", "path": "media/cam.txt"}],
         "target": "The camera moves forward and pans right."},
        {"id": "c2", "conditions": [{"type": "camera", "path": "media/cam.txt"}],
         "caption": "The camera zooms in slowly."},
        {"id": "c3", "instruction": "What does the camera do?",
         "conditions": [{"type": "camera", "path": "media/cam.txt"}], "target": "A handheld shot follows the subject."},
    ]
    paths = {"cot": folder / "cot.jsonl", "camera": folder / "camera.jsonl"}
    paths["cot"].write_text("".join(json.dumps(r) + "\n" for r in cot), encoding="utf-8")
    paths["camera"].write_text("".join(json.dumps(r) + "\n" for r in camera), encoding="utf-8")
    return paths



@pytest.fixture(scope="session")
def sft_kit(tmp_path_factory):
    """A base interpreter folder (tiny Qwen2.5-VL + a small camera encoder) and training data."""
    from vidcli.interpreter.camera_encoder import CameraEncoderConfig
    from vidcli.interpreter.model import Interpreter
    from vidcli.testing import ensure_tiny_models

    root = tmp_path_factory.mktemp("sft-kit")
    vlm = ensure_tiny_models(["vlm"])["vlm"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        small = CameraEncoderConfig(hidden_size=32, depth=1, num_heads=2, image_size=(32, 32), out_hidden_size=64)
        Interpreter.from_pretrained(str(vlm), device="cpu", dtype="float32", with_camera=True,
                                    camera_config=small).save_pretrained(root / "base")
    return {"vlm": vlm, "base": root / "base", **write_data(root / "data")}


def make_config(kit, out: Path, **overrides) -> SFTConfig:
    run_keys = {"seed", "max_steps", "batch_size", "grad_accum", "save_every", "resume", "epochs"}
    run_args = {"seed": 0, "max_steps": 2, "batch_size": 2, "grad_accum": 1, "save_every": 0, "mixed_precision": "no"}
    run_args.update({k: overrides.pop(k) for k in list(overrides) if k in run_keys})
    optim = overrides.pop("optim", OptimConfig(lr=1e-2, warmup_steps=0, schedule="cosine"))
    stage = overrides.get("stage", "cot")
    args = {"model": str(kit["base"]), "inputs": [str(kit[stage])], **overrides}
    return SFTConfig(run=RunConfig(output_dir=out, optim=optim, **run_args), **args)


def params(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


# ----------------------------------------------------------------------------- loss and masking


def test_loss_is_mean_nll_over_assistant_tokens(sft_kit, tmp_path):
    recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", instruction_dropout=0.0))
    recipe.setup()
    interp = recipe.interpreter
    batch = recipe.batch(0, [0, 1, 2])  # identity image; camera tokens; text only
    labels, ids = batch["labels"], batch["input_ids"]
    tok = interp.processor.tokenizer
    eot = interp.end_of_turn_ids()
    for row, index in enumerate([0, 1, 2]):
        target_ids = tok.encode(recipe.examples[index].target, add_special_tokens=False) + eot
        labelled = (labels[row] != -100).nonzero().flatten().tolist()
        start = labelled[0]
        # Exactly the assistant turn is labelled, token by token, and nothing else.
        assert labelled == list(range(start, start + len(target_ids)))
        assert labels[row, start:start + len(target_ids)].tolist() == target_ids
        assert ids[row, start:start + len(target_ids)].tolist() == target_ids
        assert tok.decode(ids[row, :start]).endswith("<|im_start|>assistant\n")
        assert batch["attention_mask"][row, start + len(target_ids):].sum() == 0  # right padding after it
    assert interp.camera_token_id in ids[1].tolist() and interp.camera_token_id not in ids[2].tolist()

    recipe.module.eval()
    with torch.no_grad():
        loss = recipe.module(batch)
        logits = interp.forward(batch).logits.double()
    total, count = 0.0, 0
    for row in range(labels.shape[0]):
        for t in range(1, labels.shape[1]):
            if labels[row, t] != -100:
                total -= torch.log_softmax(logits[row, t - 1], dim=-1)[labels[row, t]].item()
                count += 1
    assert loss.item() == pytest.approx(total / count, abs=1e-5)
    recipe.cleanup()


def test_instruction_dropout_is_seeded_per_epoch_and_example(sft_kit, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="vidcli.train"):
        recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", instruction_dropout=0.4, seed=5))
        recipe.setup()
    assert any("1 record(s) with conditions have a target without make-cot's labelled steps" in r.getMessage()
               and "id=d" in r.getMessage() for r in caplog.records)
    tok = recipe.interpreter.processor.tokenizer
    instructions = {0: "make the dog run", 1: "a cat in the room", 2: "a red car drives through the city",
                    3: "the robot waits"}
    # What the model learns to write when the instruction is dropped: make-cot's target for
    # an empty instruction (a), or the target without its step 1 (b, an older record).
    dropped_targets = {0: BLIND_DOG,
                       1: cot_target("cat").replace("Step 1 - Textual intent: The user wants a cat.\n\n", "")}
    seen = set()
    for epoch in range(6):
        batch = recipe.batch(epoch, [0, 1, 2, 3])
        for row, (index, text) in enumerate(instructions.items()):
            prompt = tok.decode(batch["input_ids"][row])
            # c has no conditions (nothing would be left), d no target for a dropped instruction.
            dropped = seeded_uniform(5, epoch, index) < 0.4 and index in (0, 1)
            assert (text not in prompt) == dropped, (epoch, index)
            assert ("no text; infer" in prompt) == dropped
            labels = batch["labels"][row]
            learnt = tok.decode(labels[labels != -100]).split("<|im_end|>")[0]
            assert learnt == (dropped_targets[index] if dropped else recipe.examples[index].target), (epoch, index)
            if dropped:
                assert "The user wants" not in learnt  # the request is never quoted
            seen.add((index, dropped))
    assert {(0, True), (1, True), (0, False), (1, False)} <= seen  # every branch exercised with this seed
    recipe.cleanup()


# ----------------------------------------------------------------------------- what trains


def test_camera_stage_trains_only_the_camera_encoder(sft_kit, tmp_path):
    recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", stage="camera", max_steps=2))
    recipe.setup()
    model, encoder = recipe.interpreter.model, recipe.interpreter.camera_encoder
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.requires_grad for p in encoder.parameters())
    model_before, encoder_before = params(model), params(encoder)
    recipe.train()
    for name, value in params(model).items():
        assert torch.equal(value, model_before[name]), name
    for name, value in params(encoder).items():
        assert not torch.equal(value, encoder_before[name]), name
    recipe.cleanup()
    # The saved folder is a whole interpreter: the model as it was, the encoder trained.
    from vidcli.interpreter.camera_encoder import CameraEncoder
    saved = CameraEncoder.from_pretrained(tmp_path / "run" / "camera_encoder")
    for name, value in saved.state_dict().items():
        assert torch.equal(value, encoder.state_dict()[name]), name


def test_camera_stage_creates_an_encoder_for_a_model_without_one(sft_kit, tmp_path):
    config = make_config(sft_kit, tmp_path / "run", stage="camera")
    config.model = str(sft_kit["vlm"])  # the plain tiny Qwen2.5-VL: no camera encoder saved
    recipe = SFTRecipe(config)
    recipe.setup()
    encoder = recipe.interpreter.camera_encoder
    assert encoder is not None and encoder.config.out_hidden_size == recipe.interpreter.hidden_size
    from vidcli.interpreter.camera_encoder import CameraEncoderConfig

    # the paper's input layout, sized down with the tiny LLM (CameraEncoderConfig.for_language_model)
    assert encoder.config.in_channels == 96 and encoder.config == CameraEncoderConfig.for_language_model(64)
    assert recipe.optimizer.param_groups[0]["params"][0] is encoder.patch_embed.weight
    assert sum(len(g["params"]) for g in recipe.optimizer.param_groups) == len(list(encoder.parameters()))
    recipe.cleanup()


def test_gradient_checkpointing_gives_the_same_step(sft_kit, tmp_path):
    results = []
    for flag in (False, True):
        recipe = SFTRecipe(make_config(sft_kit, tmp_path / f"gc-{flag}", max_steps=1, gradient_checkpointing=flag,
                                       instruction_dropout=0.0))
        recipe.setup()
        assert any(getattr(m, "gradient_checkpointing", False) for m in recipe.interpreter.model.modules()) == flag
        recipe.train()
        results.append(params(recipe.interpreter.model))
        recipe.cleanup()
    for name, value in results[0].items():
        assert torch.allclose(value, results[1][name], atol=1e-6), name


def test_camera_records_are_validated(sft_kit, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "conditions": [{"type": "camera", "path": str(sft_kit["camera"].parent
                                                                                         / "media" / "cam.txt")}]})
                   + "\n" + json.dumps({"id": "y", "conditions": [], "target": "t"}) + "\n")
    config = make_config(sft_kit, tmp_path / "run", stage="camera")
    config.inputs = [str(bad)]
    with pytest.raises(InputError) as err:
        run_sft(config)
    assert str(err.value).startswith(f"{bad}:1: id=x: missing or empty 'target' or 'caption'")


def test_lora_trains_only_adapters_and_encoder_and_loads_with_peft(sft_kit, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", finetune="lora", max_steps=2))
    recipe.setup()
    model = recipe.interpreter.model
    adapted = {n for n, m in model.named_modules() if n.endswith((".q_proj", ".down_proj")) and hasattr(m, "lora_A")}
    assert adapted and all("language_model" in n for n in adapted)  # never the vision tower
    before = params(model)
    encoder_before = params(recipe.interpreter.camera_encoder)
    recipe.train()
    after = params(model)
    lora = [n for n in after if "lora_" in n]
    assert lora
    for name in after:
        assert torch.equal(after[name], before[name]) != (name in lora), name
    for name, value in params(recipe.interpreter.camera_encoder).items():
        assert not torch.equal(value, encoder_before[name]), name
    recipe.cleanup()

    out = tmp_path / "run"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    base = AutoModelForImageTextToText.from_pretrained(sft_kit["base"], dtype=torch.float32)
    loaded = PeftModel.from_pretrained(base, out)
    loaded_params = dict(loaded.named_parameters())
    for name in lora:
        assert torch.equal(loaded_params[name], after[name]), name
    ids = torch.tensor([[5, 17, 42, 9]])
    model.eval()  # no adapter dropout
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)


def test_full_run_saves_a_transformers_checkpoint(sft_kit, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "run"
    recipe = SFTRecipe(make_config(sft_kit, out, max_steps=2))
    recipe.setup()
    groups = recipe.optimizer.param_groups
    assert "model.model.language_model.norm.weight" in groups[1]["names"]
    assert "model.model.language_model.layers.0.self_attn.q_proj.bias" in groups[1]["names"]
    assert "model.model.language_model.layers.0.self_attn.q_proj.weight" in groups[0]["names"]
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    recipe.train()
    trained = recipe.interpreter.model.state_dict()
    recipe.cleanup()
    loaded = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    state = loaded.state_dict()
    assert state.keys() == trained.keys()
    for name, value in state.items():
        assert torch.equal(value, trained[name]), name
    assert AutoProcessor.from_pretrained(out).tokenizer.convert_tokens_to_ids("<|camera_pad|>") is not None
    info = json.loads((out / "vidcli.json").read_text())
    assert info["step"] == 2 and info["final"] and info["stage"] == "cot" and info["finetune"] == "full"


# ----------------------------------------------------------------------------- resume


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_resume_from_a_checkpoint_in_process_is_exact(sft_kit, tmp_path, finetune):
    weights = "model.safetensors" if finetune == "full" else "adapter_model.safetensors"
    from safetensors.torch import load_file

    common = dict(finetune=finetune, max_steps=3, save_every=2, batch_size=2, grad_accum=2, instruction_dropout=0.5)
    run_sft(make_config(sft_kit, tmp_path / "whole", **common))
    # A second folder that holds only the step-2 checkpoint, as if the run had died after it.
    (tmp_path / "cut").mkdir()
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "cut" / "checkpoint-2")
    run_sft(make_config(sft_kit, tmp_path / "cut", resume=True, **common))
    for name in (weights, "camera_encoder/camera_encoder.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    # The resumed run knows where it came from and ends at the same step.
    info = json.loads((tmp_path / "cut" / "vidcli.json").read_text())
    assert info["step"] == 3 and info["base_model"] == str(sft_kit["base"])
    # Resuming with another fine-tuning mode is refused.
    other = "lora" if finetune == "full" else "full"
    shutil.copytree(tmp_path / "whole" / "checkpoint-2", tmp_path / "other" / "checkpoint-2")
    with pytest.raises(InputError, match=f"was trained with --finetune {finetune}, not {other}"):
        run_sft(make_config(sft_kit, tmp_path / "other", resume=True, **{**common, "finetune": other}))


# ----------------------------------------------------------------------------- bad input


def test_bad_records_name_file_line_and_id(sft_kit, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "ok", "instruction": "x", "cot": {"target": "y"}}) + "\n"
                    + json.dumps({"id": "nocot", "instruction": "x"}) + "\n")
    config = make_config(sft_kit, tmp_path / "run")
    config.inputs = [str(data)]
    with pytest.raises(InputError, match=rf"^{data}:2: id=nocot: missing field 'cot'"):
        run_sft(config)
    data.write_text(json.dumps({"id": "m", "instruction": "x", "cot": {"target": "y"},
                                "conditions": [{"type": "depth", "path": "nowhere.mp4"}]}) + "\n")
    expected = r"d\.jsonl:1: id=m: conditions\[0\] \(depth\): file not found: .*nowhere\.mp4$"
    with pytest.raises(MediaError, match=expected):
        run_sft(config)


def test_prompt_limits_depend_on_conditions(sft_kit, tmp_path):
    (tmp_path / "depth.mp4").write_bytes(b"not decoded at validation time")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"id": "t", "instruction": "a dog", "cot": {"target": "y"}}) + "\n"
                    + json.dumps({"id": "p", "instruction": "a dog", "cot": {"target": "y"},
                                  "conditions": [{"type": "pose", "path": "depth.mp4"}]}) + "\n")
    config = make_config(sft_kit, tmp_path / "run", max_prompt_tokens=100, max_prompt_tokens_dense=300)
    config.inputs = [str(data)]
    examples, prints = load_examples(config)
    assert [e.prompt_limit for e in examples] == [100, 300]
    assert prints[str(data)]["records"] == 2
    assert SFTConfig(model="m", inputs=[], run=config.run).max_prompt_tokens_dense == 1024  # the paper's stage 1


def test_every_over_long_prompt_is_reported_before_the_first_step(sft_kit, tmp_path, caplog):
    # Text-only prompts (c) are the shortest; with the limit at c's length every other one is over.
    probe = SFTRecipe(make_config(sft_kit, tmp_path / "probe"))
    probe.setup()
    lengths = [int(probe.interpreter.encode([record_request(e.source, probe.config)])["attention_mask"].sum())
               for e in probe.examples]
    probe.cleanup()
    limit = lengths[2]
    assert all(n > limit for i, n in enumerate(lengths) if i != 2)
    recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", max_prompt_tokens=limit, max_prompt_tokens_dense=limit))
    with caplog.at_level("ERROR", logger="vidcli.train"), \
            pytest.raises(InputError, match=r"^3 of 4 prompt\(s\) are over their token limit \(listed above\)"):
        recipe.setup()
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    cot = sft_kit["cot"]
    assert lines == [f"{cot}:{line}: id={rid}: the prompt is {lengths[line - 1]} tokens long, over the limit of {limit}"
                     for line, rid in ((1, "a"), (2, "b"), (4, "d"))]
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # no step, no checkpoint
    # --drop-long-prompts: the run goes on with what fits.
    config = make_config(sft_kit, tmp_path / "dropped", max_prompt_tokens=limit, max_prompt_tokens_dense=limit,
                         drop_long_prompts=True, max_steps=1)
    recipe = SFTRecipe(config)
    recipe.setup()
    assert [e.source.id for e in recipe.examples] == ["c"]
    recipe.train()
    recipe.cleanup()


def test_qlora_without_cuda_is_a_clear_error(sft_kit, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match="qlora needs a CUDA GPU"):
        run_sft(make_config(sft_kit, tmp_path / "run", finetune="qlora"))


def test_loss_goes_down_on_a_repeated_batch(sft_kit, tmp_path):
    """Sanity of the whole loop: a few steps on the same data lower the training loss."""
    recipe = SFTRecipe(make_config(sft_kit, tmp_path / "run", max_steps=4, batch_size=4,
                                   instruction_dropout=0.0, optim=OptimConfig(lr=3e-3, warmup_steps=0,
                                                                              schedule="constant")))
    recipe.setup()
    batch = recipe.batch(0, [0, 1, 2, 3])
    with torch.no_grad():
        first = recipe.module(batch).item()
    recipe.train()
    with torch.no_grad():
        last = recipe.module(batch).item()
    assert last < first - 0.5
    recipe.cleanup()
