"""SPEC 2 transforms: crops, the authors' normalisation, random erasing, Caffe input."""
import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import transforms

from dataset.transforms import (AUTHORS_STD, CAFFE_MEAN_BGR, ERASING_FILL, IMAGENET_MEAN, RandomErasing,
                                build_transform, caffe_erasing_fill)
from utils.errors import UserInputError

COLOUR = (200, 100, 50)


def constant_image(colour=COLOUR, size=(300, 280)):
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[...] = colour
    return PIL.Image.fromarray(pixels)


@pytest.mark.parametrize("trans", ["GL_orig_RE", "GLorig"])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("crop_size, resize_size", [(227, 256), (32, 36)])
def test_output_shape_is_the_crop(trans, train, crop_size, resize_size):
    transform = build_transform(trans, train, "resnet50", crop_size=crop_size, resize_size=resize_size)
    assert transform(constant_image()).shape == (3, crop_size, crop_size)


def test_training_crop_is_random_resized_crop_with_torchvision_defaults_and_flip():
    steps = build_transform("GLorig", True, "resnet50").transforms
    crop = steps[0]
    assert isinstance(crop, transforms.RandomResizedCrop) and crop.size == (227, 227)
    assert crop.scale == (0.08, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
    assert isinstance(steps[1], transforms.RandomHorizontalFlip) and steps[1].p == 0.5
    assert [type(step) for step in steps[2:]] == [transforms.ToTensor, transforms.Normalize]


def test_evaluation_is_resize_center_crop_to_tensor_normalize():
    steps = build_transform("GL_orig_RE", False, "resnet50").transforms
    assert [type(step) for step in steps] == [transforms.Resize, transforms.CenterCrop,
                                              transforms.ToTensor, transforms.Normalize]
    assert steps[0].size == 256 and steps[1].size == (227, 227)


def test_normalisation_uses_the_authors_std_with_0_299_for_red():
    assert AUTHORS_STD == (0.299, 0.224, 0.225) and IMAGENET_MEAN == (0.485, 0.456, 0.406)
    output = build_transform("GLorig", False, "resnet50")(constant_image())
    for channel, value in enumerate(COLOUR):
        pixel = torch.tensor(value, dtype=torch.float32) / 255
        expected = (pixel - IMAGENET_MEAN[channel]) / AUTHORS_STD[channel]
        assert torch.allclose(output[channel], expected, rtol=0, atol=1e-6)


def test_gl_orig_re_ends_with_random_erasing_of_the_authors_parameters():
    erasing = build_transform("GL_orig_RE", True, "resnet50").transforms[-1]
    assert isinstance(erasing, RandomErasing)
    assert erasing.probability == 0.5 and erasing.area == (0.02, 0.4) and erasing.min_aspect == 0.3
    assert erasing.fill.flatten().tolist() == pytest.approx(ERASING_FILL)
    assert not any(isinstance(step, RandomErasing)
                   for step in build_transform("GLorig", True, "resnet50").transforms)
    assert not any(isinstance(step, RandomErasing)
                   for step in build_transform("GL_orig_RE", False, "resnet50").transforms)


def test_random_erasing_fills_one_rectangle_of_allowed_area_and_aspect():
    erasing = RandomErasing(fill=(7.0, 8.0, 9.0), probability=1.0)
    torch.manual_seed(0)
    for _ in range(200):
        image = erasing(torch.zeros(3, 60, 50))
        erased = image[0] == 7.0
        rows, cols = erased.any(1).nonzero().ravel(), erased.any(0).nonzero().ravel()
        height, width = len(rows), len(cols)
        assert erased.sum() == height * width  # one filled rectangle
        assert torch.all(image[:, erased] == torch.tensor([[7.0], [8.0], [9.0]]))
        assert 0.02 * 3000 - 60 <= height * width <= 0.4 * 3000 + 60  # rounding of the sides
        assert 0.3 * 0.8 <= height / width <= (1 / 0.3) / 0.8


def test_random_erasing_happens_with_probability_one_half():
    erasing = RandomErasing(fill=ERASING_FILL)
    torch.manual_seed(0)
    erased = sum(bool((erasing(torch.zeros(3, 40, 40)) != 0).any()) for _ in range(1000))
    assert 450 <= erased <= 550


def test_bn_inception_input_is_bgr_on_0_255_minus_caffe_mean():
    output = build_transform("GL_orig_RE", False, "bn_inception")(constant_image())
    expected = [COLOUR[2] - CAFFE_MEAN_BGR[0], COLOUR[1] - CAFFE_MEAN_BGR[1], COLOUR[0] - CAFFE_MEAN_BGR[2]]
    for channel, value in enumerate(expected):
        assert torch.all(output[channel] == value)


def test_bn_inception_keeps_the_crops():
    train = build_transform("GL_orig_RE", True, "bn_inception")
    assert train(constant_image()).shape == (3, 227, 227)
    assert isinstance(train.transforms[0], transforms.RandomResizedCrop)


def test_bn_inception_erasing_fill_is_the_authors_constants_by_default():
    """They passed the RGB 0-1 constants unchanged to BN-Inception's BGR 0-255 input."""
    erasing = build_transform("GL_orig_RE", True, "bn_inception").transforms[-1]
    assert erasing.fill.flatten().tolist() == pytest.approx([0.4914, 0.4822, 0.4465])


def test_bn_inception_erasing_colour_option_paints_the_same_colour_as_for_resnet():
    erasing = build_transform("GL_orig_RE", True, "bn_inception", fill="colour").transforms[-1]
    assert erasing.fill.flatten().tolist() == pytest.approx(caffe_erasing_fill())
    caffe_rgb = [(fill + mean) / 255 for fill, mean in zip(caffe_erasing_fill(), CAFFE_MEAN_BGR)][::-1]
    resnet_rgb = [fill * std + mean for fill, std, mean in zip(ERASING_FILL, AUTHORS_STD, IMAGENET_MEAN)]
    assert caffe_rgb == pytest.approx(resnet_rgb)


def test_unknown_transform_names_dataset_trans():
    with pytest.raises(UserInputError, match="dataset.trans 'autoaugment'"):
        build_transform("autoaugment", True, "resnet50")


def test_crop_scale_option_changes_only_the_crop_area_share():
    crop = build_transform("GL_orig_RE", True, "resnet50", 24, 24, crop_scale=[0.5, 1.0]).transforms[0]
    assert crop.scale == (0.5, 1.0) and crop.ratio == pytest.approx((3 / 4, 4 / 3))
