"""Specification of CAT's text-spotting rule: rapidocr reads text rendered by PIL, and `text_overlap` is the share of
distinct spotted words (>= 2 characters, lower-cased) that the caption contains."""

import pytest
import rapidocr
from rapidocr import RapidOCR
from rapidocr.utils.download_file import DownloadFile

from curation import TextSpotter, text_overlap
from curation.text_spotting import bundled_model_params, words
from tests.helpers import scene, text_image


# ---- the overlap rule ------------------------------------------------------------------------------------------
def test_overlap_is_one_when_every_spotted_word_is_in_the_caption():
    assert text_overlap("BIG SALE", "a woman holds a big sign for the sale") == 1.0


def test_overlap_is_zero_when_no_spotted_word_is_in_the_caption():
    assert text_overlap("OPEN DAILY", "a man is riding a red bike") == 0.0


def test_overlap_is_the_share_of_distinct_spotted_words_found():
    # spotted {open, daily, 24, hours}; caption has "open" and "hours": 2 / 4
    assert text_overlap("OPEN DAILY 24 hours, open!", "the shop is open for hours") == 0.5


def test_overlap_is_zero_without_spotted_text():
    assert text_overlap("", "a big sale") == 0.0 and text_overlap(None, "a big sale") == 0.0


def test_single_characters_are_not_words():
    assert words("A b c 7 ok") == {"ok"}


def test_overlap_matches_whole_words_not_substrings():
    assert text_overlap("SALE", "a salesman at work") == 0.0


# ---- OCR -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spotter():
    return TextSpotter(device="cpu")


def test_rendered_text_is_read(spotter):
    assert words(spotter.spot(text_image("BIG SALE"))) == {"big", "sale"}


def test_two_rendered_lines_are_both_read(spotter):
    assert words(spotter.spot(text_image("OPEN DAILY\nFRESH BREAD"))) == {"open", "daily", "fresh", "bread"}


def test_textless_picture_spots_nothing(spotter):
    assert spotter.spot(scene(0)) == ""


def test_spotter_reads_what_rapidocr_reads_when_called_directly(spotter):
    image = text_image("OPEN DAILY")
    direct = RapidOCR(params={"Global.log_level": "error"})(image)
    assert spotter.spot(image) == " ".join(direct.txts)


def test_batch_call_spots_each_image(spotter):
    images = [text_image("BIG SALE"), scene(1), text_image("OPEN DAILY")]
    assert spotter(images) == [spotter.spot(image) for image in images]


def test_weights_come_from_the_rapidocr_wheel():
    folder = str(rapidocr.__file__).rsplit("/", 1)[0] + "/models/"
    assert all(path.startswith(folder) for path in bundled_model_params().values())


def test_spotting_never_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("rapidocr tried to download a model")

    monkeypatch.setattr(DownloadFile, "run", classmethod(refuse))
    assert words(TextSpotter(device="cpu").spot(text_image("BIG SALE"))) == {"big", "sale"}


def test_spotter_pickles_without_its_engine(spotter):
    import pickle

    spotter.spot(scene(2))  # builds the engine
    clone = pickle.loads(pickle.dumps(spotter))
    assert clone._engine is None and clone.params == spotter.params
