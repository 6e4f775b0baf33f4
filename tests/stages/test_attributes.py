"""Colour naming, size bands and track motion on constructed pixels and boxes."""
import numpy as np
import pytest

from stages.attributes import (COLOR_TERMS, AttributeConfig, box_color, centre_speed, frame_size,
                               motion_attributes, name_pixel_colors, relative_size)

CFG = AttributeConfig()


@pytest.mark.parametrize("rgb,name", [
    ((220, 20, 20), "red"), ((250, 140, 10), "orange"), ((240, 230, 30), "yellow"), ((30, 180, 40), "green"),
    ((20, 40, 220), "blue"), ((130, 30, 200), "purple"), ((250, 160, 190), "pink"), ((120, 70, 20), "brown"),
    ((5, 5, 5), "black"), ((245, 245, 245), "white"), ((128, 128, 128), "gray"),
])
def test_basic_colour_terms(rgb, name):
    pixel = np.array([[rgb]], np.uint8)
    assert COLOR_TERMS[int(name_pixel_colors(pixel)[0, 0])] == name


def test_box_colour_reads_the_box_not_the_background():
    image = np.full((100, 200, 3), 245, np.uint8)       # white frame
    image[20:80, 100:180] = (20, 40, 220)               # a blue object
    name, share = box_color(image, (0.5, 0.2, 0.9, 0.8))
    assert name == "blue" and share > 0.95
    assert box_color(image, (0.0, 0.0, 0.4, 1.0))[0] == "white"


def test_box_colour_of_a_degenerate_box_does_not_crash():
    image = np.zeros((10, 10, 3), np.uint8)
    assert box_color(image, (0.5, 0.5, 0.5, 0.5))[0] == "black"


def test_frame_size_bands():
    assert frame_size((0, 0, 0.1, 0.1), CFG)[0] == "small"      # 1% of the frame
    assert frame_size((0, 0, 0.3, 0.3), CFG)[0] == "medium"     # 9%
    assert frame_size((0, 0, 0.6, 0.6), CFG)[0] == "large"      # 36%
    name, score = frame_size((0, 0, 0.01, 0.01), CFG)
    assert name == "small" and score == 1.0


def test_relative_size_against_other_boxes():
    big, tiny = (0, 0, 0.5, 0.5), (0, 0, 0.05, 0.05)
    assert relative_size(tiny, [big, big], CFG)[0] == "small"
    assert relative_size(big, [tiny, tiny], CFG)[0] == "large"
    assert relative_size(big, [big], CFG)[0] == "medium"
    assert relative_size(big, [], CFG) is None


def test_centre_speed_uses_timestamps():
    boxes = [(x, 0.4, x + 0.1, 0.5) for x in (0.0, 0.1, 0.2, 0.3)]
    assert centre_speed(boxes, [0.0, 0.5, 1.0, 1.5]) == pytest.approx(0.2)
    assert centre_speed(boxes, [0.0, 1.0, 2.0, 3.0]) == pytest.approx(0.1)
    assert centre_speed(boxes[:1], [0.0]) is None


@pytest.mark.parametrize("speed,expected", [
    (0.0, {"motion": "still"}), (0.01, {"motion": "still"}),
    (0.1, {"motion": "moving", "speed": "slow"}), (0.6, {"motion": "moving", "speed": "fast"}),
])
def test_motion_and_speed(speed, expected):
    got = {name: value for name, value, _ in motion_attributes(speed, CFG)}
    assert got == expected
    assert all(0.5 <= s <= 1.0 for _, _, s in motion_attributes(speed, CFG))
