"""Image transforms of SPEC 2: 'GL_orig_RE' and 'GLorig', ImageNet or Caffe input."""
import math

import torch
import torchvision.transforms.functional as TF
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from utils.errors import UserInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
# Quirk of the authors' normalisation: 0.299 for red, not ImageNet's 0.229.
AUTHORS_STD = (0.299, 0.224, 0.225)
# Random erasing fills with these constants in the *normalised* space, after
# Normalize, as the authors' code does (the CIFAR means of the Random Erasing paper).
ERASING_FILL = (0.4914, 0.4822, 0.4465)
ERASING_PROBABILITY = 0.5
ERASING_AREA = (0.02, 0.4)
ERASING_MIN_ASPECT = 0.3
# BN-Inception's Caffe input: BGR channels on a 0-255 scale, mean per BGR channel, std 1.
CAFFE_MEAN_BGR = (104.0, 117.0, 128.0)
CAFFE_STD = (1.0, 1.0, 1.0)

# Transform name -> whether the training transform ends with random erasing.
TRANSFORM_NAMES = {"GL_orig_RE": True, "GLorig": False}


# dataset.erasing_fill: 'authors' writes ERASING_FILL into the normalised input
# of every backbone, as their code did; 'colour' (ours) gives BN-Inception the
# pixel colour that ERASING_FILL stands for in the ResNet input.
ERASING_FILL_CHOICES = ("authors", "colour")


def caffe_erasing_fill():
    """The ``colour`` erasing fill for BN-Inception: the same pixel colour as for the other nets.

    Our option: the ResNet fill value v_c in normalised space is the pixel
    colour v_c * std_c + mean_c (RGB, 0-1); for BN-Inception we paint that very
    colour, in BGR order on the 0-255 scale minus the Caffe mean, so the
    augmentation looks the same whichever backbone is trained. (The authors
    passed the ResNet constants unchanged, which on a 0-255 scale is almost
    exactly the mean colour; that is the default, ``authors``.)
    """
    rgb_colour = [fill * std + mean for fill, std, mean in zip(ERASING_FILL, AUTHORS_STD, IMAGENET_MEAN)]
    return tuple(255.0 * channel - mean for channel, mean in zip(reversed(rgb_colour), CAFFE_MEAN_BGR))


def erasing_fill(caffe_input, choice="authors"):
    """The value random erasing writes into the normalised input, per channel."""
    if choice not in ERASING_FILL_CHOICES:
        raise UserInputError(f"Unknown dataset.erasing_fill '{choice}'; "
                             f"use one of {', '.join(ERASING_FILL_CHOICES)}.")
    return caffe_erasing_fill() if caffe_input and choice == "colour" else ERASING_FILL


class RandomErasing:
    """Random erasing with the authors' sampling (Zhong et al.'s original code).

    Not torchvision's ``RandomErasing``: that one draws the aspect ratio
    log-uniformly and tries 10 rectangles; this one draws it uniformly in
    [min_aspect, 1 / min_aspect] and tries up to 100. Draws from torch's
    generator, so loader workers seed it. Erases in place.
    """

    def __init__(self, fill, probability=ERASING_PROBABILITY, area=ERASING_AREA,
                 min_aspect=ERASING_MIN_ASPECT, attempts=100):
        self.fill = torch.tensor(fill, dtype=torch.float32).view(-1, 1, 1)
        self.probability = probability
        self.area = area
        self.min_aspect = min_aspect
        self.attempts = attempts

    @staticmethod
    def uniform(low, high):
        return torch.empty(1).uniform_(low, high).item()

    def __call__(self, image):
        if torch.rand(1).item() >= self.probability:
            return image
        _, height, width = image.shape
        for _ in range(self.attempts):
            target_area = self.uniform(*self.area) * height * width
            aspect = self.uniform(self.min_aspect, 1.0 / self.min_aspect)
            erase_height = int(round(math.sqrt(target_area * aspect)))
            erase_width = int(round(math.sqrt(target_area / aspect)))
            if erase_height < height and erase_width < width:
                top = torch.randint(0, height - erase_height + 1, (1,)).item()
                left = torch.randint(0, width - erase_width + 1, (1,)).item()
                image[:, top:top + erase_height, left:left + erase_width] = self.fill
                return image
        return image

    def __repr__(self):
        return (f"{type(self).__name__}(p={self.probability}, area={self.area}, "
                f"aspect=({self.min_aspect}, 1/{self.min_aspect}), fill={self.fill.flatten().tolist()})")


class ToCaffeTensor:
    """PIL RGB image -> float tensor in BGR order with values 0-255 (no rounding loss)."""

    def __call__(self, image):
        return TF.pil_to_tensor(image).flip(0).to(torch.float32)

    def __repr__(self):
        return f"{type(self).__name__}()"


# torchvision's default area share of RandomResizedCrop, which the authors used.
DEFAULT_CROP_SCALE = (0.08, 1.0)


def build_transform(trans, train, net_type, crop_size=227, resize_size=256, crop_scale=DEFAULT_CROP_SCALE,
                    mean=None, std=None, interpolation=None, fill="authors"):
    """The authors' transform ``trans`` for training or evaluation.

    Training: RandomResizedCrop(crop) with torchvision defaults (the area
    share ``crop_scale`` is (0.08, 1) unless the config changes it),
    horizontal flip, tensor, normalisation (+ random erasing for 'GL_orig_RE').
    Evaluation: Resize(resize), CenterCrop(crop), tensor, normalisation.
    ``mean``, ``std`` and ``interpolation`` (e.g. 'bicubic') replace the
    authors' normalisation and bilinear resizing: timm models pass those of
    their pretrained config.
    ``fill`` is ``dataset.erasing_fill`` (see ``erasing_fill``).
    """
    if trans not in TRANSFORM_NAMES:
        raise UserInputError(
            f"Unknown dataset.trans '{trans}'; use one of {', '.join(TRANSFORM_NAMES)}.")
    caffe_input = net_type == "bn_inception"
    resampling = InterpolationMode(interpolation or InterpolationMode.BILINEAR.value)
    if train:
        geometry = [transforms.RandomResizedCrop(crop_size, scale=tuple(crop_scale), interpolation=resampling),
                    transforms.RandomHorizontalFlip()]
    else:
        geometry = [transforms.Resize(resize_size, interpolation=resampling), transforms.CenterCrop(crop_size)]
    if caffe_input:
        to_input = [ToCaffeTensor(), transforms.Normalize(CAFFE_MEAN_BGR, CAFFE_STD)]
    else:
        to_input = [transforms.ToTensor(), transforms.Normalize(mean or IMAGENET_MEAN, std or AUTHORS_STD)]
    erasing = []
    if train and TRANSFORM_NAMES[trans]:
        erasing = [RandomErasing(erasing_fill(caffe_input, fill))]
    return transforms.Compose(geometry + to_input + erasing)
