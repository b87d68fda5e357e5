"""ShuffleNetV2 (1x) of Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design" (ECCV 2018), in its CIFAR form: a 3x3 stem of 24 channels at stride 1 without max-pooling,
three stages of 4, 8 and 4 units (116, 232, 464 channels) each opening with a downsampling unit, a 1x1
conv to 1024 channels, global average pooling and a linear classifier.

The stage widths are those of the paper's 1x network times `scale`, rounded to an even number (a unit
splits its channels in two halves), so any positive scale gives a network, not only the paper's
0.5x/1x/1.5x/2x settings."""
import torch
from torch import nn

from models.layers import PooledConvNet, conv_bn
from models.scaling import scaled

STEM_WIDTH = 24
HEAD_WIDTH = 1024
# (output width, number of units) per stage; the first unit of each stage downsamples.
SHUFFLENETV2_LAYOUT = [(116, 4), (232, 8), (464, 4)]


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of `groups` equal groups, so that information flows between them."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def main_branch(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """1x1 conv-BN-ReLU, 3x3 depthwise conv-BN at `stride` (no ReLU after a depthwise conv, per the
    paper's unit design), 1x1 conv-BN-ReLU."""
    return nn.Sequential(
        conv_bn(in_channels, out_channels, 1, activation=nn.ReLU),
        conv_bn(out_channels, out_channels, 3, stride, groups=out_channels),
        conv_bn(out_channels, out_channels, 1, activation=nn.ReLU),
    )


class ShuffleUnit(nn.Module):
    """The basic unit (Fig. 3c): split the channels in two halves, pass one through the main branch,
    keep the other as it is, concatenate and shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        self.branch = main_branch(channels // 2, channels // 2, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, self.branch(transformed)], 1))


class DownsamplingUnit(nn.Module):
    """The unit for spatial downsampling (Fig. 3d): both branches see the whole input at stride 2,
    a depthwise conv then a 1x1 conv on the left, the main branch on the right; each gives half of the
    output channels, which are concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            conv_bn(in_channels, in_channels, 3, stride=2, groups=in_channels),
            conv_bn(in_channels, half, 1, activation=nn.ReLU),
        )
        self.right = main_branch(in_channels, half, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], 1))


class ShuffleNetV2(PooledConvNet):
    """A conv stem, stages of shuffle units given by `layout`, and a 1x1 conv head."""

    def __init__(self, layout: list[tuple[int, int]] = SHUFFLENETV2_LAYOUT, scale: float = 1.0,
                 num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers: list[nn.Module] = [conv_bn(3, channels, 3, activation=nn.ReLU)]
        for width, units in layout:
            width = scaled(width, scale, minimum=2, multiple_of=2)
            layers.append(DownsamplingUnit(channels, width))
            layers += [ShuffleUnit(width) for _ in range(units - 1)]
            channels = width
        head = scaled(HEAD_WIDTH, scale)
        layers.append(conv_bn(channels, head, 1, activation=nn.ReLU))
        super().__init__(layers, head, num_classes)


def shufflenetv2(scale: float = 1.0, num_classes: int = 10) -> ShuffleNetV2:
    """ShuffleNetV2 with the stage widths of the paper's 1x network, times `scale`."""
    return ShuffleNetV2(SHUFFLENETV2_LAYOUT, scale, num_classes)
