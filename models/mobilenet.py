"""MobileNet (v1) of Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications" (2017), in its CIFAR form: a 3x3 stem of 32 channels at stride 1, thirteen
depthwise-separable layers (Table 1 of the paper, widths 64 to 1024, four of them at stride 2), global
average pooling and a linear classifier. `scale` plays the role of the paper's width multiplier alpha."""
from torch import nn

from models.layers import PooledConvNet, conv_bn
from models.scaling import scaled

STEM_WIDTH = 32
# (output width, stride) of the thirteen depthwise-separable layers.
MOBILENET_LAYOUT = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def depthwise_separable(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """A factorized 3x3 convolution: a 3x3 depthwise conv (one filter per channel) and a 1x1
    pointwise conv that mixes the channels, each followed by BatchNorm and ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, in_channels, 3, stride, groups=in_channels, activation=nn.ReLU),
        conv_bn(in_channels, out_channels, 1, activation=nn.ReLU),
    )


class MobileNet(PooledConvNet):
    """A standard 3x3 conv stem followed by the depthwise-separable layers of `layout`."""

    def __init__(self, layout: list[tuple[int, int]] = MOBILENET_LAYOUT, scale: float = 1.0,
                 num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers = [conv_bn(3, channels, 3, activation=nn.ReLU)]
        for width, stride in layout:
            layers.append(depthwise_separable(channels, scaled(width, scale), stride))
            channels = scaled(width, scale)
        super().__init__(layers, channels, num_classes)


def mobilenet(scale: float = 1.0, num_classes: int = 10) -> MobileNet:
    """MobileNet with the thirteen depthwise-separable layers of the paper."""
    return MobileNet(MOBILENET_LAYOUT, scale, num_classes)
