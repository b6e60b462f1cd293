"""Reading a request the way the offline teacher does: words, phrases and pixels by rule.

Helpers of :mod:`vidcli.testing.teacher` (a test double, not a model). Nothing here
understands language or pictures; it picks phrases out of the request's own text with
word lists and measures colour and change in the frames it was sent, so that replies
quote the request back in the shape each vidcli stage asks for.
"""
from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass

import numpy as np

STOP = frozenset(
    "a an the of and or to in on at over under with from by for into onto is are be it its this that "
    "their his her as while then than so very one two three some each other what which who does do not "
    "has have had was were there here will would can could".split())
MODIFIERS = frozenset(
    "red orange yellow green blue purple pink brown black white grey gray golden silver pale dark bright "
    "light clear quiet small large big tiny tall short long round old young little wide left right warm "
    "cold night day sunny empty busy wooden brick stone glass".split())
CAMERA_WORDS = frozenset(
    "camera shot angle framing pan pans panning tilt tilts dolly zoom zooms orbit orbits tracking crane "
    "handheld static fixed steady close-up wide aerial overhead eye-level".split())
MOTION_STEMS = frozenset(
    "roll move run walk rise fall circle wave fly turn jump spin drive swim dance cross cut raise smile "
    "rotate slide drift fade grow open close enter leave climb sway bounce swing float pour flow melt "
    "shake nod reveal approach sit stand".split())
PLACE_WORDS = frozenset(
    "grass sky floor park street road room field beach forest city garden table house houses path lake "
    "sea water desk kitchen office stage mountain hill river snow window windows wall background scene "
    "gravel trees".split())
LIGHT_WORDS = frozenset(
    "daylight day night sun sunny sunlight sunlit dusk dawn sunset sunrise moon moonlight lamp lamps "
    "lights light shadow shadows bright dark dim glow lit evening morning afternoon".split())
SPATIAL_WORDS = frozenset(
    "left right centre center middle around above below behind front near far edge top bottom beside "
    "between foreground background corner".split())
STYLE_WORDS = frozenset(
    "style realistic cinematic cartoon animated painterly vintage mood cheerful calm dramatic natural "
    "colours colors tone".split())
# Nouns that never name a thing in the picture.
NOT_OBJECTS = CAMERA_WORDS | SPATIAL_WORDS | frozenset(
    "clip video frame frames picture footage view image identity user".split())
COLOURS = {
    "red": (200, 40, 40), "orange": (230, 140, 40), "yellow": (230, 210, 60), "green": (60, 150, 70),
    "blue": (60, 100, 210), "sky-blue": (140, 190, 240), "purple": (110, 60, 150), "pink": (230, 150, 180),
    "brown": (120, 80, 50), "grey": (128, 128, 128), "white": (235, 235, 235), "black": (20, 20, 20),
    "navy": (20, 20, 70),
}

_WORD = re.compile(r"[a-z][a-z'-]*")
_BREAK = re.compile(r"[.;!?]+\s+|[.;!?]+$|,\s*|\s+(?:and then|then|while|but|whereas)\s+", re.IGNORECASE)
_PREPOSITIONS = "on|over|in|under|across|along|through|inside|near|beside|at"
# A word of a phrase: anything but a preposition, conjunction or article, which end the phrase.
_PHRASE_WORD = rf"(?!(?:{_PREPOSITIONS}|with|and|or|of|to|from|while|then|a|an|the)\b)[a-z-]+"
_DETERMINED = re.compile(rf"\b(?:a|an|the)\s+((?:{_PHRASE_WORD}\s+){{0,3}}{_PHRASE_WORD})", re.IGNORECASE)
_PLACE_PHRASE = re.compile(rf"\b(?:{_PREPOSITIONS})\s+(?:(?:a|an|the)\s+)?(?:{_PHRASE_WORD}\s+){{0,2}}{_PHRASE_WORD}",
                           re.IGNORECASE)
# "waves at the camera" is about the subject, not the camera work.
_AT_CAMERA = re.compile(r"\b(?:at|into|towards?|to) the camera\b", re.IGNORECASE)


def one_line(text: str) -> str:
    """Whitespace folded and colons softened, so a phrase can never start a caption label."""
    return " ".join(text.replace(":", ",").split())


def sentence(text: str) -> str:
    """``text`` as one sentence: capitalised, closed with a full stop."""
    text = one_line(text).rstrip(" ,;")
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?" else ".")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    if len(word) > 4 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxh":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def content_words(text: str) -> set[str]:
    """The words that carry meaning (no stop words), crudely stemmed."""
    return {stem(w) for w in words(text) if w not in STOP and len(w) > 2}


def supports(caption: str, fact: str) -> bool:
    """A fact counts as stated when at least half of its content words are in the caption."""
    wanted = content_words(fact)
    return bool(wanted) and 2 * len(wanted & content_words(caption)) >= len(wanted)


def clauses(text: str) -> list[str]:
    return [c.strip() for c in _BREAK.split(one_line(text)) if c and len(c.split()) >= 2]


def has_word(text: str, vocabulary: frozenset[str]) -> bool:
    return any(w in vocabulary or stem(w) in vocabulary for w in words(text))


def is_motion(text: str) -> bool:
    return any(stem(w) in MOTION_STEMS or w in MOTION_STEMS for w in words(text))


def is_camera(text: str) -> bool:
    return has_word(_AT_CAMERA.sub(" ", text), CAMERA_WORDS)


def camera_clauses(text: str) -> list[str]:
    return [c for c in clauses(text) if is_camera(c)]


def motion_clauses(text: str) -> list[str]:
    return [c for c in clauses(text) if is_motion(c) and not is_camera(c)]


def objects(text: str) -> list[dict]:
    """``{name, attributes, phrase}`` for each "a/the [modifiers] noun" phrase (not camera words)."""
    found, seen = [], set()
    for match in _DETERMINED.finditer(one_line(text)):
        tokens = match.group(1).lower().split()
        mods = []
        while len(tokens) > 1 and (tokens[0] in MODIFIERS or tokens[0].endswith("ed")):
            mods.append(tokens.pop(0))
        noun = tokens[0]
        phrase = " ".join([*mods, noun])
        if noun in STOP or noun in NOT_OBJECTS or phrase in seen or len(noun) < 3:
            continue
        seen.add(phrase)
        found.append({"name": noun, "attributes": mods, "phrase": phrase})
    return found


def described_object(text: str) -> list[dict]:
    """Objects of a condition caption; the first gets what follows "with" as its attributes."""
    found = objects(text)
    if found and " with " in f" {text} ":
        tail = one_line(text).split(" with ", 1)[1]
        extra = [re.sub(r"^(?:a|an|the)\s+", "", p.strip()) for p in re.split(r",|\band\b", tail)]
        found[0]["attributes"] += [p for p in extra if p]
        found = [found[0]] + [o for o in found[1:] if o["name"] not in words(tail)]
    return found


def place_phrases(text: str, vocabulary: frozenset[str]) -> list[str]:
    """Prepositional phrases ("over green grass") whose words touch ``vocabulary``."""
    return [m.group(0) for m in _PLACE_PHRASE.finditer(one_line(text)) if has_word(m.group(0), vocabulary)]


def colour_phrases(text: str) -> list[str]:
    names = "red|orange|yellow|green|blue|purple|pink|brown|black|white|grey|gray|golden|silver"
    return [m.group(0) for m in re.finditer(rf"\b(?:{names})\s+[a-z-]+", one_line(text).lower())]


def first_words(text: str, limit: int) -> str:
    return " ".join(one_line(text).split()[:limit])


# ------------------------------------------------------------------ frames


def image_groups(content: object) -> list[list[np.ndarray]]:
    """The pictures of a message, grouped: each "[video: ...]" marker starts a video; an image
    after other text starts a group of its own. Each picture as an 8x8 RGB array in [0, 1]."""
    groups: list[list[np.ndarray]] = []
    current: list[np.ndarray] | None = None
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            current = [] if str(part.get("text", "")).startswith("[video:") else None
            if current is not None:
                groups.append(current)
        elif part.get("type") == "image_url":
            if current is None:
                current = []
                groups.append(current)
            current.append(_decode((part.get("image_url") or {}).get("url", "")))
    return [g for g in groups if g]


def _decode(url: str) -> np.ndarray:
    from PIL import Image

    data = base64.b64decode(url.split(",", 1)[1]) if "," in url else b""
    with Image.open(io.BytesIO(data)) as image:
        small = image.convert("RGB").resize((8, 8))
    return np.asarray(small, dtype=np.float64) / 255.0


def colour_name(frames: list[np.ndarray]) -> str:
    mean = np.mean([f.reshape(-1, 3).mean(axis=0) for f in frames], axis=0) * 255
    return min(COLOURS, key=lambda name: float(np.sum((np.array(COLOURS[name]) - mean) ** 2)))


def brightness(frames: list[np.ndarray]) -> str:
    level = float(np.mean([f.mean() for f in frames]))
    return "dark" if level < 0.3 else "bright" if level > 0.65 else "even"


def flicker(frames: list[np.ndarray]) -> float:
    """Mean absolute change between consecutive frames (0 for a still picture)."""
    if len(frames) < 2:
        return 0.0
    return float(np.mean([np.abs(a - b).mean() for a, b in zip(frames, frames[1:])]))


def difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean absolute difference between the average pictures of two groups."""
    return float(np.abs(np.mean(a, axis=0) - np.mean(b, axis=0)).mean())


def motion_sentence(frames: list[np.ndarray], end_s: float | None) -> str:
    when = f"by {end_s:.1f} s" if end_s else "by the end"
    if flicker(frames) > 0.03:
        return f"at first the shapes sit in their starting places, and {when} they have clearly moved"
    return f"the picture barely changes from the first frame to the last ({when})"


def last_time(text: str) -> float | None:
    """The last timestamp of a "[video: N frames at F fps, t = ..., X s]" marker."""
    match = re.search(r"t = ([0-9., ]+) s\]", text)
    if not match:
        return None
    stamps = [float(t) for t in match.group(1).replace(" ", "").split(",") if t]
    return stamps[-1] if stamps else None


@dataclass
class Request:
    """What a reply rule may read: the template's values, the user text parts, the pictures."""

    values: dict[str, str]
    texts: list[str]
    content: object

    def get(self, name: str) -> str:
        return (self.values.get(name) or "").strip()

    def frames(self, group: int = 0) -> list:
        groups = image_groups(self.content)
        return groups[group] if len(groups) > group else []
