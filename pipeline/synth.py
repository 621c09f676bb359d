"""Offline speech: spoken digits synthesized by text-to-speech engines.

Engines (`ENGINES`):

- `espeak-ng` (formant synthesis; the library ships in `espeakng-loader`): each speaker is an English voice with a
  variant, pitch, pitch range and rate.
- `pico` (SVOX Pico, HMM synthesis; `ttspico` on PyPI, built from source): its two English voices (en-US, en-GB,
  both female) with a pitch, a rate and a vocal-tract scale.
- `accented` (espeak-ng's voices of other languages, in the same library): each speaker is a German, French, Spanish,
  Italian, Dutch or Polish voice with a variant, pitch, range and rate, saying each English digit as that language
  would spell its sound ("wann" for "one" in German, "guan" in Spanish): English digits in a foreign accent, which the
  English voices do not give.
- `flite` (CMU Flite, unit selection / clustergen voices of real speakers; the Debian package `flite`, an optional
  extra): its English voices awb, rms, slt, kal16 with a pitch, a duration stretch and a vocal-tract scale.
- `festival` (the Festival Speech Synthesis System with its American male diphone voice ked; the Debian packages
  `festival festvox-kdlpc16k`, an optional extra): a mean F0, a duration stretch and a vocal-tract scale. Festival's
  other English diphone voice, kal, is left out: it is the speaker of Flite's kal16.

The vocal-tract scale a of a pico or flite speaker plays the engine's audio a times faster: formants and pitch rise by
a, the word gets 1/a as long, like a shorter (a > 1) or longer (a < 1) vocal tract. Train and test speakers are
disjoint. Digits are synthesized one word at a time, trimmed, resampled to the model rate and joined by the same
connected-digit recipe as FSDD, so every source gives the same splits.
"""

from __future__ import annotations

import ctypes
import importlib.util
import itertools
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .audio import resample
from .digits import DIGIT_WORDS, ConnectRecipe, Recording, build_split, trim_silence
from .errors import DataError

log = logging.getLogger(__name__)

VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
ENGINES = ("espeak-ng", "pico", "flite", "accented", "festival")
NEEDS = {
    "espeak-ng": "synthesized speech needs the `espeakng-loader` package (pip install espeakng-loader).",
    "accented": "synthesized speech by `accented` needs the `espeakng-loader` package (pip install espeakng-loader).",
    "pico": "synthesized speech by `pico` needs the `ttspico` package (pip install ttspico).",
    "flite": "synthesized speech by `flite` needs CMU Flite's `flite` program on PATH (Debian: apt install flite).",
    "festival": "synthesized speech by `festival` needs the `festival` program and its ked voice (Debian: apt install "
    "festival festvox-kdlpc16k).",
}
PICO_VOICES = ("en-US", "en-GB")
# The `accented` engine's espeak-ng voices and, for each, the digits zero..nine spelled as that language would write
# the English sound, with the substitutions its speakers are known for (th -> s/t/f, w -> v, final v -> f).
ACCENTS = {
    "de": ("sihro", "wann", "tuh", "sri", "forr", "feiw", "sicks", "sewwen", "ejt", "nein"),
    "fr": ("ziro", "ouane", "tou", "sri", "for", "faïve", "sixe", "sévène", "eït", "naïne"),
    "es": ("siro", "guan", "tu", "tri", "for", "faif", "siks", "seven", "eit", "nain"),
    "it": ("ziro", "uan", "tu", "tri", "for", "faiv", "sics", "seven", "eit", "nain"),
    "nl": ("ziero", "wan", "toe", "srie", "fohr", "faaiv", "siks", "sevven", "eejt", "najn"),
    "pl": ("ziro", "łan", "tu", "fri", "for", "fajw", "siks", "sewen", "ejt", "najn"),
}
FLITE_VOICES = ("awb", "rms", "slt", "kal16")
FESTIVAL_VOICES = ("ked_diphone",)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _PITCH, _RANGE = 1, 3, 4


@dataclass(frozen=True)
class SynthRecipe:
    train_speakers: int = 24
    test_speakers: int = 6
    takes: int = 6  # recordings per digit per speaker; take 0 is the seen-speaker test take
    train_utterances: int = 3000
    test_voices: tuple[str, ...] = ()  # voices that say no training speech; they say the `test_voices` split
    engine: str = "espeak-ng"


@dataclass(frozen=True)
class SynthSpeaker:
    name: str
    voice: str
    pitch: int  # espeak-ng: 0-100; pico: percent of the voice's own; flite, festival: mean F0 in Hz
    pitch_range: int  # espeak-ng only
    rate: int  # espeak-ng: words per minute; pico: percent; flite, festival: duration stretch in percent
    engine: str = "espeak-ng"
    tract: float = 1.0  # vocal-tract scale (pico, flite, festival): the audio is played this much faster

    def jittered(self, rng: np.random.Generator) -> tuple[int, int]:
        """One take's rate and pitch: the speaker's own with a small random change."""
        if self.engine in ("espeak-ng", "accented"):
            return int(self.rate * rng.uniform(0.9, 1.1)), int(np.clip(self.pitch + rng.integers(-5, 6), 0, 100))
        return int(self.rate * rng.uniform(0.92, 1.08)), int(self.pitch * rng.uniform(0.95, 1.05))


Job = tuple[str, SynthSpeaker, int, int]  # (text, speaker, rate, pitch) of one word


class _WordByWord:
    """An engine that says one word per call (`say`) at its `sample_rate`, known once it has spoken."""

    sample_rate: int

    def say(self, text: str, speaker: SynthSpeaker, rate: int, pitch: int) -> np.ndarray:
        raise NotImplementedError

    def say_many(self, jobs: list[Job]) -> list[tuple[int, np.ndarray]]:
        """Every job's (sample rate, samples)."""
        out = []
        for word, spk, rate, pitch in jobs:
            x = self.say(word, spk, rate, pitch)
            out.append((self.sample_rate, x))
        return out


class Espeak(_WordByWord):
    """A ctypes binding to the few espeak-ng calls we need (no maintained Python binding ships the library)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise DataError(NEEDS["espeak-ng"]) from None
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        self._libc.srand.argtypes = [ctypes.c_uint]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise DataError("espeak-ng failed to initialize (its voice data is missing).")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def on_audio(wav, n, _events):  # type: ignore[no-untyped-def]
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
            return 0

        self._callback = proto(on_audio)  # keep a reference: espeak holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, speaker: SynthSpeaker, rate: int, pitch: int) -> np.ndarray:
        """Synthesize `text`; returns float32 samples at `self.sample_rate`."""
        if self._lib.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {speaker.voice!r}.")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._lib.espeak_SetParameter(_RANGE, speaker.pitch_range, 0)
        self._chunks = []
        # espeak-ng's noise sources draw from its own generator (seeded from the clock) and from
        # libc rand(): seed both per utterance so the same recipe synthesizes the same audio
        who = (
            f"SynthSpeaker(name={speaker.name!r}, voice={speaker.voice!r}, pitch={speaker.pitch}, "
            f"pitch_range={speaker.pitch_range}, rate={speaker.rate})"
        )
        seed = zlib.crc32(f"{text}|{who}|{rate}|{pitch}".encode())
        self._lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(seed)
        data = text.encode() + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
        if not self._chunks:
            raise DataError(f"espeak-ng produced no audio for {text!r} with voice {speaker.voice!r}.")
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


class Pico(_WordByWord):
    """SVOX Pico through `ttspico`: 16 kHz speech, pitch and rate in percent of the voice's own."""

    sample_rate = 16000

    def __init__(self) -> None:
        try:
            import ttspico
        except ImportError:
            raise DataError(NEEDS["pico"]) from None
        self._engines = {v: ttspico.TtsEngine(v) for v in PICO_VOICES}

    def say(self, text: str, speaker: SynthSpeaker, rate: int, pitch: int) -> np.ndarray:
        engine = self._engines[speaker.voice]
        engine.set_property("rate", rate)
        engine.set_property("pitch", pitch)
        audio = engine.speak(text)
        if not audio:
            raise DataError(f"pico produced no audio for {text!r} with voice {speaker.voice!r}.")
        return np.frombuffer(audio, np.int16).astype(np.float32) / 32768.0


class Flite(_WordByWord):
    """CMU Flite's command-line synthesizer (Debian package `flite`): one call per word, WAV out."""

    def __init__(self) -> None:
        self._exe = shutil.which("flite")
        if self._exe is None:
            raise DataError(NEEDS["flite"])
        self._dir = tempfile.TemporaryDirectory(prefix="pipeline-flite-")  # removed with the engine
        self.sample_rate = 0

    def say(self, text: str, speaker: SynthSpeaker, rate: int, pitch: int) -> np.ndarray:
        import soundfile

        out = f"{self._dir.name}/word.wav"
        cmd = [self._exe, "-voice", speaker.voice, "--setf", f"int_f0_target_mean={pitch}"]
        cmd += ["--setf", f"duration_stretch={rate / 100:.3f}", "-t", text, "-o", out]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise DataError(f"flite failed on {text!r} with voice {speaker.voice!r}: {done.stderr.strip()[:200]}")
        x, self.sample_rate = soundfile.read(out, dtype="float32")
        return x


class Festival:
    """The Festival Speech Synthesis System (Debian packages `festival festvox-kdlpc16k`): every word of a batch in
    one `festival -b` run (one run per word would spend most of its time starting Festival), WAV files out."""

    def __init__(self) -> None:
        self._exe = shutil.which("festival")
        if self._exe is None:
            raise DataError(NEEDS["festival"])

    def say_many(self, jobs: list[Job]) -> list[tuple[int, np.ndarray]]:
        """Every job's (sample rate, samples)."""
        import soundfile

        with tempfile.TemporaryDirectory(prefix="pipeline-festival-") as tmp:
            lines, voice = [], None
            for i, (text, spk, rate, pitch) in enumerate(jobs):
                if not text.isalpha() or spk.voice not in FESTIVAL_VOICES:
                    raise DataError(f"festival cannot say {text!r} with voice {spk.voice!r}.")
                if spk.voice != voice:
                    lines.append(f"(voice_{spk.voice})")
                    voice = spk.voice
                # ked's intonation model maps its own F0 statistics onto these targets; the spread scales with the mean
                lines.append(
                    f"(set! int_lr_params '((target_f0_mean {pitch}) (target_f0_std {0.14 * pitch:.1f}) "
                    "(model_f0_mean 170) (model_f0_std 34)))"
                )
                lines.append(f"(Parameter.set 'Duration_Stretch {rate / 100:.3f})")
                lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{tmp}/{i}.wav" \'riff)')
            script = Path(tmp) / "say.scm"
            script.write_text("\n".join(lines) + "\n")
            done = subprocess.run([self._exe, "-b", str(script)], capture_output=True, text=True, check=False)
            out = []
            for i, (text, spk, _, _) in enumerate(jobs):
                wav = Path(tmp) / f"{i}.wav"
                if done.returncode != 0 or not wav.is_file():
                    detail = (done.stderr or done.stdout).strip()[:200]
                    raise DataError(f"festival failed on {text!r} with voice {spk.voice!r}: {detail}")
                x, rate_hz = soundfile.read(wav, dtype="float32")
                out.append((rate_hz, x))
            return out


def _engine(name: str) -> Espeak | Pico | Flite | Festival:
    return {"espeak-ng": Espeak, "accented": Espeak, "pico": Pico, "flite": Flite, "festival": Festival}[name]()


def _festival_has_voices() -> bool:
    """Whether `festival` runs here with every voice of FESTIVAL_VOICES."""
    exe = shutil.which("festival")
    if exe is None:
        return False
    probe = [exe, "-b", *(f"(voice_{v})" for v in FESTIVAL_VOICES)]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "error" not in (done.stdout + done.stderr).lower()


def check_engine(name: str) -> None:
    """Raise DataError naming what to install when engine `name` cannot run here. Only whether it is installed: SVOX
    Pico, once loaded into a process that has TensorFlow, crashes it."""
    installed = {
        "espeak-ng": lambda: importlib.util.find_spec("espeakng_loader") is not None,
        "accented": lambda: importlib.util.find_spec("espeakng_loader") is not None,
        "pico": lambda: importlib.util.find_spec("ttspico") is not None,
        "flite": lambda: shutil.which("flite") is not None,
        "festival": _festival_has_voices,
    }[name]()
    if not installed:
        raise DataError(NEEDS[name])


def make_engine_speakers(n: int, rng: np.random.Generator, engine: str, voices: tuple[str, ...]) -> list[SynthSpeaker]:
    """`n` speakers of a pico, flite or festival voice set: voices in turn, each with a random pitch, rate and
    vocal-tract scale (pico's voices are women's: scales below 1 and low pitches make men's voices of them)."""
    out = []
    for i in range(n):
        voice = voices[int(rng.integers(len(voices)))]
        tract = float(rng.uniform(0.8, 1.15))
        if engine == "pico":
            pitch, rate = int(rng.integers(60, 141)), int(rng.integers(80, 131))
        else:
            male = voice in ("awb", "rms", "kal16", "ked_diphone")
            pitch = int(rng.integers(85, 151)) if male else int(rng.integers(150, 241))
            rate = int(rng.integers(80, 126))
        out.append(SynthSpeaker(f"{engine}{i:02d}", voice, pitch, 0, rate, engine, round(tract, 3)))
    return out


def engine_speakers(
    n: int, rng: np.random.Generator, engine: str, espeak_voices: tuple[str, ...] = VOICES
) -> list[SynthSpeaker]:
    """`n` speakers of `engine` (espeak-ng's drawn from `espeak_voices`)."""
    if engine == "espeak-ng":
        return make_speakers(n, rng, espeak_voices)
    if engine == "accented":
        return [
            replace(s, name=f"{engine}{i:02d}", engine=engine)
            for i, s in enumerate(make_speakers(n, rng, tuple(ACCENTS)))
        ]
    voices = {"pico": PICO_VOICES, "flite": FLITE_VOICES, "festival": FESTIVAL_VOICES}[engine]
    return make_engine_speakers(n, rng, engine, voices)


def make_speakers(n: int, rng: np.random.Generator, voices: tuple[str, ...] = VOICES) -> list[SynthSpeaker]:
    """`n` voice+variant speakers of `voices` with random pitch, range and rate: distinct voice+variant pairs while
    there are enough, then each pair again (with other pitch, range and rate)."""
    combos = [f"{v}+{x}" if x else v for v, x in itertools.product(voices, VARIANTS)]
    picks = (
        rng.choice(len(combos), size=n, replace=False)
        if n <= len(combos)
        else np.resize(rng.permutation(len(combos)), n)
    )
    return [
        SynthSpeaker(
            f"synth{i:02d}",
            combos[j],
            int(rng.integers(30, 71)),
            int(rng.integers(20, 81)),
            int(rng.integers(130, 191)),
        )
        for i, j in enumerate(picks)
    ]


def spoken_word(speaker: SynthSpeaker, digit: int) -> str:
    """The text `speaker` is given for `digit`: the English word, or for an `accented` speaker its language's
    spelling of the English sound."""
    if speaker.engine == "accented":
        return ACCENTS[speaker.voice.split("+")[0]][digit]
    return DIGIT_WORDS[digit]


def _say_all(engine_name: str, jobs: list[Job]) -> list[tuple[int, np.ndarray]]:
    """Every job's (sample rate, samples); a speaker's vocal-tract scale a is applied by reading the audio as if it
    were sampled a times faster."""
    said = _engine(engine_name).say_many(jobs)
    return [(int(round(rate * spk.tract)), x) for (_, spk, _, _), (rate, x) in zip(jobs, said)]


def _say_all_in_child(engine: str, jobs: list[Job]) -> list[tuple[int, np.ndarray]]:
    """`_say_all` in a fresh interpreter (`python -m pipeline.synth_worker`) that imports nothing else: espeak-ng
    keeps state across utterances inside the library, and SVOX Pico crashes in a process that has loaded
    TensorFlow. A worker that dies is a DataError naming the engine, not a hang."""
    with tempfile.TemporaryDirectory(prefix="pipeline-synth-") as tmp:
        jobs_file, out_file = Path(tmp) / "jobs.json", Path(tmp) / "audio.npz"
        jobs_file.write_text(json.dumps({"engine": engine, "jobs": [[w, asdict(s), r, p] for w, s, r, p in jobs]}))
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.synth_worker", str(jobs_file), str(out_file)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not out_file.is_file():
            tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            raise DataError(f"the {engine} synthesizer failed in its worker process: {tail[0][:300]}")
        with np.load(out_file, allow_pickle=False) as z:
            return [(int(z["rates"][i]), z[f"a{i}"]) for i in range(len(jobs))]


def run_worker(jobs_file: Path, out_file: Path) -> None:
    """The worker's side: the jobs of `jobs_file` (JSON) synthesized into `out_file` (.npz: `rates` and a0, a1, ...)."""
    spec = json.loads(Path(jobs_file).read_text())
    jobs = [(w, SynthSpeaker(**s), r, p) for w, s, r, p in spec["jobs"]]
    audio = _say_all(spec["engine"], jobs)
    arrays = {f"a{i}": x.astype(np.float32) for i, (_, x) in enumerate(audio)}
    tmp = Path(str(out_file) + ".partial.npz")
    np.savez(tmp, rates=np.array([r for r, _ in audio], np.int64), **arrays)
    tmp.rename(out_file)


def synthesize_recordings(
    speakers: list[SynthSpeaker], takes: int, sample_rate: int, rng: np.random.Generator
) -> list[tuple[Recording, int]]:
    """Every digit `takes` times per speaker, with small rate/pitch jitter per take.

    espeak-ng keeps synthesis state across utterances inside the library (a second run in
    one process sounds slightly different), so every call synthesizes in a fresh child
    process: the same recipe then gives the same audio in any process.
    """
    jobs, keys, gains = [], [], []
    for spk in speakers:
        for take in range(takes):
            for digit in range(len(DIGIT_WORDS)):
                rate, pitch = spk.jittered(rng)
                jobs.append((spoken_word(spk, digit), spk, rate, pitch))
                keys.append((spk.name, digit, take))
                gains.append(rng.uniform(-12, 0))
    engines = {spk.engine for spk in speakers}
    if len(engines) > 1:
        raise ValueError(f"synthesize_recordings takes one engine's speakers, got {sorted(engines)}")
    audio = _say_all_in_child(engines.pop() if engines else "espeak-ng", jobs)
    out = []
    for (name, digit, take), (engine_rate, x), gain in zip(keys, audio, gains):
        x = trim_silence(resample(x, engine_rate, sample_rate), sample_rate)
        x = x * (10 ** (gain / 20) / max(1e-6, float(np.abs(x).max())))
        out.append((Recording(name, digit, x.astype(np.float32)), take))
    return out


def prepare_synth(
    out_dir: Path, sample_rate: int, recipe: SynthRecipe, connect: ConnectRecipe, seed: int
) -> dict[str, Path]:
    """Write `train`, `test_seen`, `test_unseen` splits of synthesized connected digits."""
    rng = np.random.default_rng(seed)
    total = recipe.train_speakers + recipe.test_speakers
    speakers = engine_speakers(total, rng, recipe.engine, tuple(v for v in VOICES if v not in recipe.test_voices))
    train_spk = speakers[: recipe.train_speakers]
    prefix = "synth" if recipe.engine == "espeak-ng" else recipe.engine
    test_spk = [replace(s, name=f"{prefix}-test{i:02d}") for i, s in enumerate(speakers[recipe.train_speakers :])]
    log.info("synthesizing %d speakers x %d takes x 10 digits with %s", len(speakers), recipe.takes, recipe.engine)
    train_recs = synthesize_recordings(train_spk, recipe.takes, sample_rate, rng)
    unseen = [r for r, _ in synthesize_recordings(test_spk, max(1, recipe.takes // 2), sample_rate, rng)]
    splits = {
        "train": build_split(
            [r for r, t in train_recs if t > 0], out_dir, "train", sample_rate, rng, connect, recipe.train_utterances
        ),
        "test_seen": build_split([r for r, t in train_recs if t == 0], out_dir, "test_seen", sample_rate, rng, connect),
        "test_unseen": build_split(unseen, out_dir, "test_unseen", sample_rate, rng, connect),
    }
    if recipe.test_voices and recipe.engine == "espeak-ng":
        held = [
            SynthSpeaker(f"synth-{s.voice}-{i:02d}", s.voice, s.pitch, s.pitch_range, s.rate)
            for i, s in enumerate(make_speakers(recipe.test_speakers, rng, recipe.test_voices))
        ]
        recs = [r for r, _ in synthesize_recordings(held, max(1, recipe.takes // 2), sample_rate, rng)]
        splits["test_voices"] = build_split(recs, out_dir, "test_voices", sample_rate, rng, connect)
    return splits


HELD = "held"  # a `test_engines` speaker is named <engine>-held<i>


def held_engine(speaker: str) -> str:
    """The engine that says a `test_engines` speaker's speech (`prepare_engine_test` names them)."""
    return speaker.split(f"-{HELD}")[0]


def prepare_engine_test(
    out_dir: Path,
    sample_rate: int,
    engine: str,
    recipe: SynthRecipe,
    connect: ConnectRecipe,
    seed: int,
    split: str = "test_engines",
) -> Path:
    """A `test_engines` split: connected digits said by `recipe.test_speakers` speakers of `engine`, which says no
    training speech (their own seed, so the speakers do not depend on what else the corpus holds). With
    `split="dev"`, the dev split of a corpus synthesized alone: speakers of a training engine drawn apart from the
    training ones (another seed: other pitch, range and rate; a voice may recur)."""
    rng = np.random.default_rng([seed, ENGINES.index(engine), 1 if split == "test_engines" else 2])
    speakers = engine_speakers(recipe.test_speakers, rng, engine)
    tag = HELD if split == "test_engines" else split
    held = [replace(s, name=f"{engine}-{tag}{i:02d}") for i, s in enumerate(speakers)]
    recs = [r for r, _ in synthesize_recordings(held, max(1, recipe.takes // 2), sample_rate, rng)]
    return build_split(recs, out_dir, split, sample_rate, rng, connect)
