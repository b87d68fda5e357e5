"""DenseNet-121 of Huang et al., "Densely Connected Convolutional Networks" (CVPR 2017), in its CIFAR
form: a 3x3 stem of 2k channels without max-pooling, four dense blocks of 6, 12, 24 and 16 bottleneck
layers with growth rate k = 32, transitions that compress the channels by 0.5 and halve the resolution,
then BN-ReLU, global average pooling and a linear classifier (DenseNet-BC in the paper's terms)."""
import torch
from torch import nn
from torch.nn import functional as F

from models.layers import PooledConvNet
from models.scaling import scaled

GROWTH_RATE = 32
DENSENET121_BLOCKS = [6, 12, 24, 16]
BOTTLENECK_FACTOR = 4  # the 1x1 bottleneck conv produces 4k maps
COMPRESSION = 0.5  # a transition keeps this fraction of its input channels


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv to 4k maps, then BN-ReLU-3x3 conv to k new maps, which are concatenated to the
    input: every layer sees the feature maps of all layers before it in its block."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        bottleneck = BOTTLENECK_FACTOR * growth_rate
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bottleneck, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(bottleneck)
        self.conv2 = nn.Conv2d(bottleneck, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new_maps = self.conv1(F.relu(self.bn1(x)))
        new_maps = self.conv2(F.relu(self.bn2(new_maps)))
        return torch.cat([new_maps, x], 1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv that compresses the channels, then 2x2 average pooling between dense blocks."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(PooledConvNet):
    """Dense blocks of `layers_per_block` layers joined by compressing transitions; the growth rate,
    and with it the stem (2k) and every bottleneck (4k), is `growth_rate * scale`."""

    def __init__(self, layers_per_block: list[int], growth_rate: int = GROWTH_RATE,
                 scale: float = 1.0, num_classes: int = 10):
        k = scaled(growth_rate, scale)
        channels = 2 * k
        stages: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1, bias=False)]
        for index, layers in enumerate(layers_per_block):
            if index > 0:
                compressed = scaled(channels, COMPRESSION)
                stages.append(Transition(channels, compressed))
                channels = compressed
            block = []
            for _ in range(layers):
                block.append(DenseLayer(channels, k))
                channels += k
            stages.append(nn.Sequential(*block))
        stages += [nn.BatchNorm2d(channels), nn.ReLU()]
        super().__init__(stages, channels, num_classes)


def densenet121(scale: float = 1.0, num_classes: int = 10) -> DenseNet:
    """DenseNet-121: dense blocks of 6, 12, 24 and 16 layers, growth rate 32."""
    return DenseNet(DENSENET121_BLOCKS, GROWTH_RATE, scale, num_classes)
