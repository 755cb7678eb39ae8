"""Loading inputs as training does: broken files and texts raise one-line errors naming the sample;
the Collator skips them with skip_bad (warned, recorded, listed per batch)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from _badfiles import good_png, png_with_corrupt_idat, truncated_jpeg, truncated_wav_header, write_wav
from PIL import Image

from u2a.data.datasets import merge_skipped
from u2a.data.processing import (
    Collator,
    ImageProcessor,
    TextProcessor,
    load_image,
    read_audio,
    validate_text,
    verify_input,
)
from u2a.errors import DataError, SampleError


class FakeTokenizer:
    """Takes text as a fast (Rust) tokenizer does: a lone surrogate cannot cross into Rust."""

    def __call__(self, texts, **kwargs):
        for t in texts:
            if not isinstance(t, str):
                raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
            t.encode("utf-8")  # UnicodeEncodeError for a lone surrogate
        n = max(len(t) for t in texts)
        return {"input_ids": torch.ones(len(texts), n, dtype=torch.long),
                "attention_mask": torch.ones(len(texts), n, dtype=torch.long)}


class FakeImageProcessor:
    def __init__(self, fail_width: int | None = None):
        self.fail_width = fail_width

    def __call__(self, images, return_tensors="pt", **kwargs):
        for im in images:
            if im.size[0] == self.fail_width:
                raise ValueError(f"cannot resize a {im.size[0]}-pixel-wide image")
        return {"pixel_values": torch.zeros(len(images), 3, 4, 4)}


def collator(skip_bad: bool = False, fail_width: int | None = None) -> Collator:
    config = SimpleNamespace(modality_names=["image", "text"], task="single", num_classes=3)
    procs = {"image": ImageProcessor(FakeImageProcessor(fail_width), None), "text": TextProcessor(FakeTokenizer(), 16)}
    return Collator(config, procs, train=True, skip_bad=skip_bad)


def item(sid, image=None, text=None, label=0, where=None):
    it = {"id": sid, "label": label, "fields": {"image": None if image is None else str(image), "text": text}}
    if where:
        it["where"] = where
    return it


# ------------------------------------------------------------------ one input


def test_lone_surrogate_text_is_refused():
    assert validate_text("café ☕ 🍕") == "café ☕ 🍕"
    with pytest.raises(SampleError, match=r"^sample 's1': text holds a lone surrogate \\ud800 at character 5"):
        validate_text("bad \ud800 text", "s1")
    with pytest.raises(SampleError, match="empty text"):
        validate_text("   ", "s1")


@pytest.mark.parametrize("make,why", [(png_with_corrupt_idat, "data stream"), (truncated_jpeg, "truncated")],
                         ids=["png_corrupt_idat", "jpeg_truncated"])
def test_images_that_pass_verify_but_do_not_decode(tmp_path, make, why):
    p = make(tmp_path / f"bad.{'png' if 'png' in make.__name__ else 'jpg'}")
    with Image.open(p) as im:
        im.verify()  # what the old check did: it passes
    with pytest.raises(SampleError, match=why) as e:
        load_image(p, "s9")
    assert e.value.file == str(p) and e.value.sample_id == "s9"
    assert str(e.value).startswith(f"sample 's9': unreadable image {p}: OSError")
    with pytest.raises(SampleError):
        verify_input("image", p)


def test_decompression_bomb_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.delenv("U2A_MAX_IMAGE_PIXELS", raising=False)
    warn = good_png(tmp_path / "warn.png", size=12)  # 144 px: over the limit, PIL only warns
    bomb = good_png(tmp_path / "bomb.png", size=20)  # 400 px: over twice the limit, PIL raises
    for p in (warn, bomb):
        with pytest.raises(SampleError, match=rf"image {p} refused as a possible decompression bomb") as e:
            load_image(p, "big")
        assert e.value.file == str(p) and "U2A_MAX_IMAGE_PIXELS" in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setenv("U2A_MAX_IMAGE_PIXELS", "none")
    assert load_image(bomb).size == (20, 20)
    monkeypatch.setenv("U2A_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(DataError, match="U2A_MAX_IMAGE_PIXELS"):
        load_image(bomb)


def test_audio_is_read_in_full(tmp_path):
    wav, sr = read_audio(write_wav(tmp_path / "ok.wav", frames=160))
    assert sr == 16000 and wav.shape == (160,)
    bad = truncated_wav_header(tmp_path / "bad.wav")
    with pytest.raises(SampleError, match=rf"sample 'a1': unreadable audio {bad}"):
        read_audio(bad, "a1")
    with pytest.raises(SampleError, match="holds no samples"):
        read_audio(write_wav(tmp_path / "none.wav", frames=0), "a2")


def test_video_must_be_a_folder_of_decodable_frames(tmp_path):
    (tmp_path / "clip").mkdir()
    good_png(tmp_path / "clip" / "f1.png")
    verify_input("video", tmp_path / "clip")
    png_with_corrupt_idat(tmp_path / "clip" / "f2.png")
    with pytest.raises(SampleError, match="f2.png") as e:
        verify_input("video", tmp_path / "clip", "v1")
    assert e.value.file == str(tmp_path / "clip" / "f2.png")
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 16)
    with pytest.raises(SampleError, match="is not a folder of frames"):
        verify_input("video", tmp_path / "clip.mp4")


# ------------------------------------------------------------------ the Collator


@pytest.fixture
def inputs(tmp_path):
    return {"good": good_png(tmp_path / "good.png"), "idat": png_with_corrupt_idat(tmp_path / "idat.png"),
            "jpeg": truncated_jpeg(tmp_path / "cut.jpg")}


def test_collator_without_skip_bad_names_the_sample_and_file(inputs):
    c = collator()
    batch = c([item("a", inputs["good"], "fine"), item("b", None, "text only")])
    assert batch["ids"] == ["a", "b"] and batch["present"].tolist() == [[True, True], [False, True]]
    assert batch["skipped"] == [] and c.skipped == []
    with pytest.raises(SampleError) as e:
        c([item("a", inputs["good"], "fine"), item("b", inputs["idat"], "x", where="m.jsonl:7")])
    msg = str(e.value)
    assert msg.startswith(f"m.jsonl:7: sample 'b': field 'image': unreadable image {inputs['idat']}")
    assert "\n" not in msg
    # the lone surrogate: a SampleError naming the sample, not the tokenizer's TypeError
    with pytest.raises(SampleError, match=r"^sample 'c': field 'text': text holds a lone surrogate"):
        c([item("a", inputs["good"], "fine"), item("c", None, "x \udc80 y")])


def test_collator_skip_bad_drops_records_and_warns(inputs, caplog):
    c = collator(skip_bad=True)
    items = [item("a", inputs["good"], "fine", label=0),
             item("b", inputs["idat"], "x", label=1, where="train.jsonl:2"),
             item("c", inputs["good"], "bad \ud800", label=2),
             item("d", inputs["jpeg"], None, label=1),
             item("e", None, "text only", label=2)]
    with caplog.at_level(logging.WARNING, logger="u2a.data.processing"):
        batch = c(items)
    assert batch["ids"] == ["a", "e"]
    assert batch["labels"].tolist() == [0, 2]
    assert batch["present"].tolist() == [[True, True], [False, True]]
    assert batch["inputs"]["image"]["pixel_values"].shape[0] == 1
    assert batch["inputs"]["text"]["input_ids"].shape[0] == 2
    recs = batch["skipped"]
    assert [(r["id"], r["modality"]) for r in recs] == [("b", "image"), ("c", "text"), ("d", "image")]
    assert recs[0]["file"] == str(inputs["idat"]) and recs[0]["where"] == "train.jsonl:2"
    assert recs[1]["file"] == "" and "lone surrogate" in recs[1]["reason"]
    assert "truncated" in recs[2]["reason"] and recs[2]["file"] == str(inputs["jpeg"])
    assert set(recs[0]) == {"id", "modality", "file", "reason", "where"} and set(recs[1]) == {"id", "modality", "file", "reason"}
    assert c.skipped == recs
    warned = "\n".join(r.getMessage() for r in caplog.records)
    assert "skipping sample 'b'" in warned and str(inputs["idat"]) in warned and "lone surrogate" in warned


def test_collator_skip_bad_finds_the_sample_a_processor_cannot_take(tmp_path, inputs):
    wide = good_png(tmp_path / "wide.png", size=5)
    c = collator(skip_bad=True, fail_width=5)
    batch = c([item("a", inputs["good"], "t"), item("w", wide, "t"), item("z", inputs["good"], None)])
    assert batch["ids"] == ["a", "z"]
    assert batch["skipped"][0]["id"] == "w" and "image processor cannot take it: ValueError" in batch["skipped"][0]["reason"]
    with pytest.raises(SampleError, match=r"sample 'w': field 'image': the image processor cannot take it"):
        collator(fail_width=5)([item("a", inputs["good"], "t"), item("w", wide, "t")])


def test_a_batch_where_every_sample_fails_is_an_error(inputs):
    c = collator(skip_bad=True)
    with pytest.raises(DataError, match=r"every sample of a batch \(2\) failed to load") as e:
        c([item("b", inputs["idat"], "x"), item("d", inputs["jpeg"], None)])
    assert "sample 'b'" in str(e.value) and "sample 'd'" in str(e.value)


def test_merge_skipped_adds_the_records_to_the_data_report():
    report = {"sizes": {"train": 3}, "skipped_count": 0, "skipped": []}
    recs = [{"id": "b", "modality": "image", "file": "/d/b.png", "reason": "unreadable image"},
            {"id": "c", "modality": "text", "file": "", "reason": "lone surrogate"}]
    out = merge_skipped(report, recs + recs[:1])  # the same sample fails again in a later epoch
    assert out is report
    assert report["skipped_samples_count"] == 2
    assert [r["id"] for r in report["skipped_samples"]] == ["b", "c"]
    merge_skipped(report, [{"id": "d", "modality": "image", "file": "/d/d.png", "reason": "x"}])
    assert report["skipped_samples_count"] == 3 and report["skipped_count"] == 0


def test_a_resumed_run_keeps_the_samples_its_earlier_sessions_skipped(tmp_path):
    """write_data_report rewrites RUN/data.json when a run (re)starts; on resume the samples that
    failed to load before the kill stay listed (the same sample in another split is another record)."""
    import json
    from types import SimpleNamespace

    from u2a.data.datasets import write_data_report

    class Split(list):
        manifest = SimpleNamespace(skipped=[], path="m.jsonl")

    earlier = [{"split": "train", "id": "b", "modality": "image", "file": "/d/b.png", "reason": "truncated"},
               {"split": "val", "id": "b", "modality": "image", "file": "/d/vb.png", "reason": "truncated"}]
    (tmp_path / "data.json").write_text(json.dumps({"sizes": {}, "skipped_count": 0, "skipped": [],
                                                    "skipped_samples": earlier, "skipped_samples_count": 2}))
    report = write_data_report({"train": Split([1, 2])}, tmp_path, keep_samples=True)
    assert report["skipped_samples"] == earlier and report["skipped_samples_count"] == 2
    assert json.loads((tmp_path / "data.json").read_text())["skipped_samples"] == earlier
    assert "skipped_samples" not in write_data_report({"train": Split([1, 2])}, tmp_path)  # a fresh run


def test_an_empty_list_of_items_is_an_empty_batch():
    batch = collator(skip_bad=True)([])
    assert batch["ids"] == [] and batch["inputs"] == {} and batch["skipped"] == []


def test_deep_grayscale_images_are_scaled_not_clipped(tmp_path):
    """16-bit and float images used to come out all white / all black (PIL clips them)."""
    import numpy as np

    from u2a.data.processing import load_image

    ramp16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    rampf = (np.arange(64 * 64).reshape(64, 64) / (64 * 64 - 1)).astype(np.float32)  # 0 .. 1
    Image.fromarray(rampf).save(tmp_path / "f.tiff")
    for name in ("g16.png", "f.tiff"):
        a = np.asarray(load_image(tmp_path / name))
        assert a.shape == (64, 64, 3) and a.min() == 0 and a.max() >= 254, name
        assert 120 < a.mean() < 135, (name, a.mean())  # a ramp, not a blank image
    Image.fromarray((rampf * 1000).astype(np.float32)).save(tmp_path / "wide.tiff")
    with pytest.raises(SampleError, match=r"wide.tiff is a float image with values in \[0, 1000\]"):
        load_image(tmp_path / "wide.tiff", "s1")


def test_images_are_turned_upright_by_their_exif_orientation(tmp_path):
    import numpy as np

    from u2a.data.processing import load_image

    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 10, 20))  # white left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    a = np.asarray(load_image(tmp_path / "phone.jpg"))
    assert a.shape == (40, 20, 3)  # portrait, as displayed
    assert a[:8].mean() > 200 and a[-8:].mean() < 50  # the white edge is now on top


def test_whisper_features_of_very_short_and_very_long_clips():
    """A batch of clips shorter than one STFT window used to fail (or not, by batch); a clip over
    30 s used to stop training at the encoder, naming no file. Now: at least one window, at most
    the encoder's 30 s (or max_length frames)."""
    import numpy as np
    from transformers import WhisperFeatureExtractor

    from u2a.data.processing import AudioProcessor

    proc = AudioProcessor(WhisperFeatureExtractor(), None)
    tiny = proc([np.zeros(1, np.float32)])["input_features"]
    assert tiny.shape[:2] == (1, 80) and tiny.shape[2] >= 2
    long = proc([np.random.default_rng(0).standard_normal(16000 * 40).astype(np.float32)])["input_features"]
    assert long.shape == (1, 80, 3000)
    cut = AudioProcessor(WhisperFeatureExtractor(), 500)([np.zeros(16000 * 40, np.float32)])["input_features"]
    assert cut.shape == (1, 80, 500)
    two = proc([np.zeros(16000, np.float32), np.zeros(800, np.float32)])["input_features"]
    assert two.shape == (2, 80, 100)  # the batch's longest clip (1 s), as before


def test_a_text_of_only_invisible_characters_is_empty():
    from u2a.data.processing import validate_text

    for text in ("\u200b", "\ufeff", "\u200b \u2060\t"):
        with pytest.raises(SampleError, match="only invisible characters"):
            validate_text(text, "s1")
    assert validate_text("a\u200bb") == "a\u200bb"
