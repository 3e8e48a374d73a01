"""Catalog: real names, both layouts, malformed names, demographics fallbacks, the real sample clips."""

from __future__ import annotations

import logging
import shutil

import pytest

from cremad_lit.data.adapters.cremad import BadName, load_demographics, parse_name
from cremad_lit.data.catalog import build_catalog


def test_real_names_catalogue_exactly(real_names_root):
    clips = build_catalog(real_names_root)
    assert len(clips) == 7442
    assert clips["actor_id"].nunique() == 91
    assert clips["clip_id"].is_unique
    assert clips["emotion"].value_counts().to_dict() == {
        "ANG": 1271,
        "DIS": 1271,
        "FEA": 1271,
        "HAP": 1271,
        "SAD": 1271,
        "NEU": 1087,
    }
    assert clips["intensity"].value_counts().to_dict() == {"XX": 6077, "LO": 455, "MD": 455, "HI": 455}
    # no VideoDemographics.csv in this tree: gender comes from the bundled 91-actor table
    assert clips["gender"].value_counts().to_dict() == {"male": 3930, "female": 3512}
    assert clips["age"].between(20, 74).all()
    assert (clips["audio_path"] == "").all()


def test_official_layout_pairs_wavs_and_reads_local_demographics(synthetic_root):
    clips = build_catalog(synthetic_root)
    assert len(clips) == 96
    assert clips["video_path"].str.endswith(".flv").all()
    assert clips["audio_path"].str.endswith(".wav").all()
    assert (
        clips["race"] == "Synthetic"
    ).all()  # from the dataset's own VideoDemographics.csv, not the bundled one
    assert set(clips["gender"]) == {"male", "female"}


def test_kaggle_layout_takes_gender_from_the_name(kaggle_root):
    clips = build_catalog(kaggle_root)
    assert len(clips) == 32
    assert clips["video_path"].str.endswith(".mp4").all()
    assert not clips["clip_id"].str.endswith(("_01", "_02")).any()
    assert clips.set_index("actor_id")["gender"].groupby(level=0).first().to_dict() == {
        1001: "male",
        1002: "female",
    }


def test_kaggle_layout_nested_and_suffix_wins_over_tables(tmp_path):
    nested = tmp_path / "Crema" / "deeper"
    nested.mkdir(parents=True)
    # actor 1001 is male in the real table: the name's own code (02, female) wins
    (nested / "1001_DFA_ANG_XX_02.mp4").touch()
    (tmp_path / "1002_DFA_SAD_XX.mkv").touch()
    clips = build_catalog(tmp_path)
    assert clips.set_index("clip_id")["gender"].to_dict() == {
        "1001_DFA_ANG_XX": "female",
        "1002_DFA_SAD_XX": "female",
    }


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("1001_DFA_XYZ_XX.flv", "unknown emotion code"),
        ("1001_DFA_ANG_ZZ.flv", "unknown intensity code"),
        ("1001_QQQ_ANG_XX.flv", "unknown statement code"),
        ("1001_DFA_ANG_XX_07.mp4", "unknown gender code"),
        ("notes_about_clips.mp4", "name is not"),
        ("101_DFA_ANG_XX.flv", "name is not"),
    ],
)
def test_bad_names_are_warned_about_and_left_out(tmp_path, caplog, name, reason):
    (tmp_path / "1001_DFA_ANG_XX.flv").touch()
    (tmp_path / name).touch()
    with caplog.at_level(logging.WARNING):
        clips = build_catalog(tmp_path)
    assert list(clips["clip_id"]) == ["1001_DFA_ANG_XX"]
    assert name in caplog.text and reason in caplog.text


def test_duplicate_stems_across_folders_keep_the_first(tmp_path, caplog):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "1001_DFA_ANG_XX.flv").touch()
    with caplog.at_level(logging.WARNING):
        clips = build_catalog(tmp_path)
    assert len(clips) == 1 and "/a/" in clips.loc[0, "video_path"]
    assert "duplicate" in caplog.text and str(tmp_path / "b" / "1001_DFA_ANG_XX.flv") in caplog.text


def test_unknown_actor_gets_unknown_gender(tmp_path, caplog):
    (tmp_path / "1999_DFA_ANG_XX.flv").touch()
    with caplog.at_level(logging.WARNING):
        clips = build_catalog(tmp_path)
    assert clips.loc[0, "gender"] == "unknown" and "1999" in caplog.text


def test_missing_or_empty_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist.*VideoFlash.*data=synthetic"):
        build_catalog(tmp_path / "nowhere")
    (tmp_path / "notes.txt").touch()
    with pytest.raises(FileNotFoundError, match="no CREMA-D media.*official layout"):
        build_catalog(tmp_path)


def test_parse_name_fields():
    assert parse_name("1076_MTI_SAD_XX_02") == {
        "clip_id": "1076_MTI_SAD_XX",
        "actor_id": 1076,
        "statement": "MTI",
        "emotion": "SAD",
        "intensity": "XX",
        "gender": "female",
    }
    with pytest.raises(BadName):
        parse_name("1076_MTI_SAD")


def test_bundled_demographics_match_the_real_table(meta_dir):
    bundled = load_demographics(None)
    assert len(bundled) == 91 and bundled["gender"].value_counts().to_dict() == {"male": 48, "female": 43}
    assert bundled.equals(load_demographics(meta_dir))


def test_real_sample_clips_catalogue(samples_dir, tmp_path):
    shutil.copytree(samples_dir, tmp_path / "cremad")
    everything = build_catalog(tmp_path / "cremad")
    # 6 videos of actor 1001 and 30 WAVs (one pairs with the 1001 ANG video): 35 clips, 29 of them audio-only
    assert len(everything) == 35 and (everything["video_path"] == "").sum() == 29
    clips = build_catalog(tmp_path / "cremad", modalities=["audio", "video"]).set_index("clip_id")
    # asking for video leaves the audio-only clips out (and says so); the MP3s are not videos
    assert sorted(clips.index) == [f"1001_DFA_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
    assert clips.loc["1001_DFA_ANG_XX", "audio_path"].endswith("AudioWAV/1001_DFA_ANG_XX.wav")
    assert clips.loc["1001_DFA_HAP_XX", "audio_path"] == ""
    assert (clips["gender"] == "male").all() and (clips["age"] == 51).all()
