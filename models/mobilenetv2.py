"""MobileNetV2 of Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR 2018),
in its CIFAR form: a 3x3 stem of 32 channels and the first bottleneck stage of 24 channels at stride 1
instead of 2, seventeen inverted-residual blocks (Table 2 of the paper), a 1x1 conv to 1280 channels,
global average pooling and a linear classifier. As in the CIFAR form, the activation is ReLU and a
stride-1 block whose width changes adds a 1x1 conv-BN projection of its input."""
import torch
from torch import nn

from models.layers import PooledConvNet, conv_bn
from models.scaling import scaled

STEM_WIDTH = 32
HEAD_WIDTH = 1280
# (expansion factor t, output width c, repeats n, stride s of the first repeat), per stage.
MOBILENETV2_LAYOUT = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class InvertedResidual(nn.Module):
    """Expand with a 1x1 conv to t times the input width, filter with a 3x3 depthwise conv, project
    back with a linear 1x1 conv (no activation: the linear bottleneck); at stride 1 add the input."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, stride: int):
        super().__init__()
        hidden = expansion * in_channels
        self.residual = nn.Sequential(
            conv_bn(in_channels, hidden, 1, activation=nn.ReLU),
            conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU),
            conv_bn(hidden, out_channels, 1),
        )
        self.shortcut: nn.Module | None = None
        if stride == 1:
            same_width = in_channels == out_channels
            self.shortcut = nn.Identity() if same_width else conv_bn(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        return out if self.shortcut is None else out + self.shortcut(x)


class MobileNetV2(PooledConvNet):
    """A 3x3 conv stem, stages of inverted residuals given by `layout`, and a 1x1 conv head."""

    def __init__(self, layout: list[tuple[int, int, int, int]] = MOBILENETV2_LAYOUT,
                 scale: float = 1.0, num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers = [conv_bn(3, channels, 3, activation=nn.ReLU)]
        for expansion, width, repeats, first_stride in layout:
            for repeat in range(repeats):
                stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(channels, scaled(width, scale), expansion, stride))
                channels = scaled(width, scale)
        head = scaled(HEAD_WIDTH, scale)
        layers.append(conv_bn(channels, head, 1, activation=nn.ReLU))
        super().__init__(layers, head, num_classes)


def mobilenetv2(scale: float = 1.0, num_classes: int = 10) -> MobileNetV2:
    """MobileNetV2 with the seven bottleneck stages of the paper."""
    return MobileNetV2(MOBILENETV2_LAYOUT, scale, num_classes)
