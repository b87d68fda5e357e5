"""EfficientNet-B0 of Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks" (ICML 2019), in its CIFAR form: a 3x3 stem of 32 channels at stride 1 (not 2), the sixteen
MBConv blocks of Table 1 in seven stages (widths 16 to 320, kernels 3 and 5), global average pooling,
dropout 0.2 and a linear classifier; as in the CIFAR form, there is no 1x1 head conv to 1280 channels.

MBConv is the inverted residual of MobileNetV2 with Swish activations and squeeze-and-excitation
(squeeze width 1/4 of the block's input width). Blocks whose input and output shapes agree add their
input back, and in training their residual branch is dropped for a whole sample with a probability that
grows linearly with depth, 0.2 * b / 16 for block b = 0..15 (drop-connect, i.e. stochastic depth, as in
the paper; the CIFAR reference code leaves every block's rate at 0). Both dropout and drop-connect draw
from torch's global random number generator and are off in eval mode.

The reference code also builds a 1x1 expansion conv and BatchNorm for the first block, whose expansion
factor is 1, and never uses them; they are left out here, so the parameter count is that of the layers
the reference network actually runs (1,088 fewer than its module holds)."""
import torch
from torch import nn

from models.layers import PooledConvNet, SqueezeExcitation, conv_bn
from models.scaling import scaled

STEM_WIDTH = 32
SE_RATIO = 0.25  # squeeze width relative to the block's input width
DROPOUT_RATE = 0.2  # before the classifier
DROP_CONNECT_RATE = 0.2  # of the deepest block's residual branch
# (expansion factor, output width, repeats, kernel size, stride of the first repeat), per stage.
EFFICIENTNET_B0_LAYOUT = [(1, 16, 1, 3, 1), (6, 24, 2, 3, 2), (6, 40, 2, 5, 2), (6, 80, 3, 3, 2),
                          (6, 112, 3, 5, 1), (6, 192, 4, 5, 2), (6, 320, 1, 3, 1)]


def drop_connect(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Zero the whole residual branch of each sample with probability `rate` (in training only) and
    rescale the kept ones by 1 / (1 - rate), so that the expected output is unchanged."""
    if not training or rate == 0:
        return x
    keep = 1.0 - rate
    mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep
    return x * mask / keep


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expansion (left out when the factor is 1), kxk depthwise conv,
    squeeze-and-excitation, and a linear 1x1 projection; Swish after the first two convolutions."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel_size: int,
                 stride: int, drop_connect_rate: float = 0.0):
        super().__init__()
        hidden = expansion * in_channels
        expand = [conv_bn(in_channels, hidden, 1, activation=nn.SiLU)] if expansion != 1 else []
        self.residual = nn.Sequential(
            *expand,
            conv_bn(hidden, hidden, kernel_size, stride, groups=hidden, activation=nn.SiLU),
            SqueezeExcitation(hidden, scaled(in_channels, SE_RATIO), activation=nn.SiLU),
            conv_bn(hidden, out_channels, 1),
        )
        self.has_shortcut = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        if not self.has_shortcut:
            return out
        return x + drop_connect(out, self.drop_connect_rate, self.training)


class EfficientNet(PooledConvNet):
    """A 3x3 conv stem and stages of MBConv blocks given by `layout`; the drop-connect rate of block
    b (counting from 0) out of B is DROP_CONNECT_RATE * b / B."""

    def __init__(self, layout: list[tuple[int, int, int, int, int]] = EFFICIENTNET_B0_LAYOUT,
                 scale: float = 1.0, num_classes: int = 10):
        channels = scaled(STEM_WIDTH, scale)
        layers: list[nn.Module] = [conv_bn(3, channels, 3, activation=nn.SiLU)]
        blocks = [(expansion, width, kernel_size, first_stride if repeat == 0 else 1)
                  for expansion, width, repeats, kernel_size, first_stride in layout
                  for repeat in range(repeats)]
        for index, (expansion, width, kernel_size, stride) in enumerate(blocks):
            rate = DROP_CONNECT_RATE * index / len(blocks)
            layers.append(MBConv(channels, scaled(width, scale), expansion, kernel_size, stride, rate))
            channels = scaled(width, scale)
        super().__init__(layers, channels, num_classes, dropout=DROPOUT_RATE)


def efficientnet_b0(scale: float = 1.0, num_classes: int = 10) -> EfficientNet:
    """EfficientNet-B0 with the seven MBConv stages of the paper."""
    return EfficientNet(EFFICIENTNET_B0_LAYOUT, scale, num_classes)
