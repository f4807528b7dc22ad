"""Specification of robust image decoding (`image_text_data.load_image`): bad input is an `UndecodableImageError`,
every PIL mode web data holds becomes RGB with the expected pixel values."""

import numpy as np
import pytest
from PIL import Image

from image_text_data import UndecodableImageError, load_image
from tests.helpers import encode, scene, sixteen_bit_png, truncated_jpeg


def test_png_bytes_decode_to_the_same_rgb_pixels():
    image = scene(0, size=32)
    decoded = load_image(encode(image))
    assert decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


def test_datasets_undecoded_dict_with_bytes_decodes():
    image = scene(1, size=32)
    np.testing.assert_array_equal(np.asarray(load_image({"bytes": encode(image), "path": None})), np.asarray(image))


def test_datasets_undecoded_dict_with_only_a_path_reads_the_file(tmp_path):
    image = scene(2, size=32)
    image.save(tmp_path / "picture.png")
    decoded = load_image({"bytes": None, "path": str(tmp_path / "picture.png")})
    np.testing.assert_array_equal(np.asarray(decoded), np.asarray(image))


def test_pil_image_passes_through_as_rgb():
    image = scene(3, size=32)
    np.testing.assert_array_equal(np.asarray(load_image(image)), np.asarray(image))


def test_truncated_jpeg_is_undecodable():
    with pytest.raises(UndecodableImageError):
        load_image(truncated_jpeg())


def test_non_image_bytes_are_undecodable():
    with pytest.raises(UndecodableImageError):
        load_image(b"<html>404 not found</html>")


def test_empty_bytes_are_undecodable():
    with pytest.raises(UndecodableImageError, match="empty"):
        load_image(b"")


def test_none_is_undecodable():
    with pytest.raises(UndecodableImageError, match="None"):
        load_image(None)


def test_dict_without_bytes_or_path_is_undecodable():
    with pytest.raises(UndecodableImageError):
        load_image({"bytes": None, "path": None})


def test_image_over_the_pixel_limit_is_refused_before_decoding():
    with pytest.raises(UndecodableImageError, match="max_pixels"):
        load_image(encode(scene(0, size=64)), max_pixels=64 * 64 - 1)


def test_image_at_the_pixel_limit_is_accepted():
    assert load_image(encode(scene(0, size=64)), max_pixels=64 * 64).size == (64, 64)


def test_grayscale_becomes_rgb_with_equal_channels():
    gray = Image.fromarray(np.array([[0, 100], [200, 255]], dtype=np.uint8), mode="L")
    expected = np.repeat(np.array([[0, 100], [200, 255]], dtype=np.uint8)[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(np.asarray(load_image(encode(gray))), expected)


def test_transparent_pixels_are_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))  # one opaque pixel, one fully transparent
    assert np.asarray(load_image(encode(rgba))).tolist() == [[[255, 255, 255], [10, 20, 30]]]


def test_half_transparent_pixel_is_blended_halfway_to_white():
    rgba = Image.new("RGBA", (1, 1), (0, 0, 0, 128))
    value = np.asarray(load_image(encode(rgba)))[0, 0]
    expected = round(255 * (1 - 128 / 255))  # black at alpha 128/255 over white
    assert np.abs(value.astype(int) - expected).max() <= 1


def test_cmyk_jpeg_becomes_rgb():
    decoded = load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))  # pure red in CMYK
    red, green, blue = np.asarray(decoded).reshape(-1, 3).mean(0)
    assert decoded.mode == "RGB" and red > 240 and green < 15 and blue < 15


def test_sixteen_bit_png_is_rescaled_not_clipped():
    decoded = np.asarray(load_image(sixteen_bit_png(40000)))
    expected = round(40000 / 65535 * 255)  # 156; PIL's own convert("RGB") would give 255
    assert np.unique(decoded).tolist() == [expected]


def test_palette_image_with_transparency_is_composited_on_white():
    palette = Image.new("P", (2, 1), 0)
    palette.putpalette([0, 0, 0, 200, 30, 40] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0  # colour 0 is transparent
    assert np.asarray(load_image(encode(palette))).tolist() == [[[255, 255, 255], [200, 30, 40]]]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (4, 2), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = encode_with_exif(image, exif)
    assert load_image(buffer).size == (2, 4)


def encode_with_exif(image, exif):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()
