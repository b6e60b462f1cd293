"""The on-disk reply cache: keys, atomic entries, and the CachedChatModel wrapper."""
from __future__ import annotations

import hashlib
import itertools
import json
import threading

from PIL import Image

from vidcli.backends import _local_fingerprint, load_chat_model
from vidcli.backends.base import Sampling
from vidcli.backends.cache import CachedChatModel, ReplyCache, cache_key, default_cache_dir
from vidcli.backends.openai_chat import OpenAIChatModel
from vidcli.testing.server import ScriptedServer, error

GREEDY = Sampling()


def ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def cached_model(server: ScriptedServer, root) -> CachedChatModel:
    inner = OpenAIChatModel("m", base_url=server.base_url, backoff_base=0.001, max_retries=1)
    return CachedChatModel(inner, ReplyCache(root))


def test_key_is_sha256_of_canonical_json():
    conversation = [{"content": "hi", "role": "user"}]
    expected_json = (
        '{"messages":[{"content":"hi","role":"user"}],"model":"openai:m",'
        '"sampling":{"max_tokens":512,"seed":null,"temperature":0.0,"top_p":1.0},"v":1}'
    )
    assert cache_key("openai:m", conversation, GREEDY) == hashlib.sha256(expected_json.encode()).hexdigest()
    # Key order in the message does not matter; model, text and sampling do.
    same = cache_key("openai:m", [{"role": "user", "content": "hi"}], GREEDY)
    assert same == cache_key("openai:m", conversation, GREEDY)
    assert len({same, cache_key("openai:n", conversation, GREEDY), cache_key("openai:m", ask("hi!"), GREEDY),
                cache_key("openai:m", conversation, Sampling(max_tokens=511))}) == 4


def test_images_keyed_by_pixels_not_identity():
    def with_image(image):
        return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "?"}]}]

    a = Image.new("RGB", (4, 4), (1, 2, 3))
    a_again = Image.new("RGB", (4, 4), (1, 2, 3))
    changed = a.copy()
    changed.putpixel((3, 3), (1, 2, 4))
    resized = Image.new("RGB", (4, 3), (1, 2, 3))
    key = cache_key("s", with_image(a), GREEDY)
    assert cache_key("s", with_image(a_again), GREEDY) == key
    assert cache_key("s", with_image(changed), GREEDY) != key
    assert cache_key("s", with_image(resized), GREEDY) != key
    frames = [a, changed]
    video = [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 2.0}]}]
    video_fps = [{"role": "user", "content": [{"type": "video", "video": frames, "fps": 4.0}]}]
    assert cache_key("s", video, GREEDY) != cache_key("s", video_fps, GREEDY)


def test_hit_reaches_no_server(tmp_path):
    with ScriptedServer(["first answer"], default=error(500, "should not be asked again")) as server:
        model = cached_model(server, tmp_path)
        [fresh] = model.generate([ask("q")], GREEDY)
        [again] = model.generate([ask("q")], GREEDY)
        assert server.count == 1
    assert (fresh.text, fresh.cached) == ("first answer", False)
    assert (again.text, again.cached) == ("first answer", True)
    [entry] = [p for p in tmp_path.rglob("*.json")]
    key = cache_key("openai:m", ask("q"), GREEDY)
    assert entry == tmp_path / "chat" / key[:2] / f"{key}.json"
    assert json.loads(entry.read_text()) == {"v": 1, "model": "openai:m", "text": "first answer"}


class BatchRecordingModel(OpenAIChatModel):
    """The real backend, noting the size of every generate call it gets."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def generate(self, conversations, sampling):
        self.batches.append(len(conversations))
        return super().generate(conversations, sampling)


def test_only_misses_go_out_in_one_batch(tmp_path):
    with ScriptedServer(lambda body: "re: " + body["messages"][-1]["content"]) as server:
        inner = BatchRecordingModel("m", base_url=server.base_url)
        model = CachedChatModel(inner, ReplyCache(tmp_path))
        model.generate([ask("b")], GREEDY)
        server.reset()
        answers = model.generate([ask("a"), ask("b"), ask("c")], GREEDY)
        sent = sorted(r.body["messages"][-1]["content"] for r in server.requests)
        model.generate([ask("a"), ask("c")], GREEDY)  # all hits: inner not called at all
    assert sent == ["a", "c"] and inner.batches == [1, 2]
    assert [(a.text, a.cached) for a in answers] == [("re: a", False), ("re: b", True), ("re: c", False)]


def test_failures_are_not_stored(tmp_path):
    with ScriptedServer([error(400, "bad"), "good"]) as server:
        model = cached_model(server, tmp_path)
        [failed] = model.generate([ask("q")], GREEDY)
        [retried] = model.generate([ask("q")], GREEDY)
        assert server.count == 2
    assert failed.error == "HTTP 400: bad" and (retried.text, retried.cached) == ("good", False)


def test_repeated_samples_in_a_batch_stay_distinct(tmp_path):
    counter = itertools.count(1)
    sampling = Sampling(temperature=1.0)
    with ScriptedServer(lambda body: f"sample {next(counter)}") as server:
        model = cached_model(server, tmp_path)
        first = [a.text for a in model.generate([ask("q")] * 3, sampling)]
        second = model.generate([ask("q")] * 3, sampling)
        assert server.count == 3
    assert sorted(first) == ["sample 1", "sample 2", "sample 3"]
    assert [a.text for a in second] == first and all(a.cached for a in second)


def test_no_cache_bypasses(tmp_path):
    with ScriptedServer(default="same") as server:
        model = load_chat_model("openai:m", base_url=server.base_url, use_cache=False, cache_dir=tmp_path)
        model.generate([ask("q")], GREEDY)
        model.generate([ask("q")], GREEDY)
        assert server.count == 2
    assert isinstance(model, OpenAIChatModel) and not list(tmp_path.rglob("*.json"))


def test_xdg_cache_home_is_the_default_root(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "vidcli"
    with ScriptedServer(default="x") as server:
        load_chat_model("openai:m", base_url=server.base_url).generate([ask("q")], GREEDY)
    assert len(list((tmp_path / "vidcli" / "chat").rglob("*.json"))) == 1
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert str(default_cache_dir()).endswith("/.cache/vidcli")


def test_unreadable_entry_is_a_miss(tmp_path):
    cache = ReplyCache(tmp_path)
    cache.put("ab" + "0" * 62, "fine", spec="s")
    assert cache.get("ab" + "0" * 62) == "fine"
    (tmp_path / "chat" / "ab" / ("ab" + "0" * 62 + ".json")).write_text('{"text": "tor')
    assert cache.get("ab" + "0" * 62) is None


def test_concurrent_writers_never_expose_partial_entries(tmp_path):
    cache = ReplyCache(tmp_path)
    key = "cd" + "1" * 62
    texts = [str(i) * 20000 for i in range(8)]  # large enough that a torn write would show
    seen: list[str | None] = []
    stop = threading.Event()

    def write(text: str) -> None:
        for _ in range(30):
            cache.put(key, text, spec="s")

    def read() -> None:
        while not stop.is_set():
            seen.append(cache.get(key))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(t,)) for t in texts]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert cache.get(key) in texts
    assert seen and all(s is None or s in texts for s in seen)
    assert [p.name for p in (tmp_path / "chat" / "cd").iterdir()] == [f"{key}.json"]  # no temp files left


def test_local_checkpoint_fingerprint_follows_its_files(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    before = _local_fingerprint(str(tmp_path))
    assert before == _local_fingerprint(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"new weights")
    assert _local_fingerprint(str(tmp_path)) != before
    assert _local_fingerprint("org/not-a-local-folder") is None


def test_hf_spec_goes_through_the_cache_keyed_by_checkpoint_content(tmp_path):
    from vidcli.backends.hf import HFChatModel
    from vidcli.testing import ensure_tiny_models

    path = ensure_tiny_models(["llm"])["llm"]
    model = load_chat_model(f"hf:{path}", cache_dir=tmp_path, device="cpu", dtype="float32", batch_size=2)
    assert isinstance(model, CachedChatModel) and isinstance(model.inner, HFChatModel)
    assert model.spec == f"hf:{path}"
    assert model.key_spec == f"hf:{path.resolve()}@{_local_fingerprint(str(path))}"
    sampling = Sampling(max_tokens=4)
    first = model.generate([ask("Is the dog red?")], sampling)
    again = model.generate([ask("Is the dog red?")], sampling)
    assert first[0].ok and not first[0].cached
    assert (again[0].text, again[0].cached) == (first[0].text, True)
    assert isinstance(load_chat_model(f"hf:{path}", use_cache=False), HFChatModel)


def test_the_cache_knows_which_server_answered(tmp_path, monkeypatch):
    monkeypatch.delenv("VIDCLI_CACHE_ENDPOINT", raising=False)
    with ScriptedServer(default="from A") as a, ScriptedServer(default="from B") as b:
        secret_a = a.base_url.replace("http://", "http://user:s3cret@")
        [first] = load_chat_model("openai:m", base_url=secret_a, cache_dir=tmp_path).generate([ask("q")], GREEDY)
        [other] = load_chat_model("openai:m", base_url=b.base_url, cache_dir=tmp_path).generate([ask("q")], GREEDY)
        # The same server spelled differently (case, trailing slash, credentials) hits.
        spelled = a.base_url.replace("127.0.0.1", "127.0.0.1".upper()) + "/"
        [again] = load_chat_model("openai:m", base_url=spelled, cache_dir=tmp_path).generate([ask("q")], GREEDY)
        assert (a.count, b.count) == (1, 1)
        # Sharing on purpose: every endpoint keyed under one name.
        monkeypatch.setenv("VIDCLI_CACHE_ENDPOINT", "replicas")
        load_chat_model("openai:m", base_url=a.base_url, cache_dir=tmp_path).generate([ask("q")], GREEDY)
        [shared] = load_chat_model("openai:m", base_url=b.base_url, cache_dir=tmp_path).generate([ask("q")], GREEDY)
        assert (a.count, b.count) == (2, 1)
    assert (first.text, other.text, again.text, again.cached) == ("from A", "from B", "from A", True)
    assert (shared.text, shared.cached) == ("from A", True)
    stored = [p.read_text() for p in tmp_path.rglob("*.json")]
    assert stored and not any("s3cret" in text for text in stored)
