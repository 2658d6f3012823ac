"""Network definitions. Every model returns logits from ``forward`` and exposes
``forward_features(x) -> (N, d)`` (penultimate, after global pooling) and ``classifier``.

CIFAR ResNets, WRNs and VGGs follow the RepDistiller definitions used by the KD literature.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ZooModel(nn.Module):
    """Base: subclasses implement forward_features; classifier maps features to logits."""

    classifier: nn.Linear

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N, d)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C)
        return self.classifier(self.forward_features(x))

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(ZooModel):
    """ResNet-(6n+2) for 32x32 inputs; widths e.g. (16, 16, 32, 64) or x4 (32, 64, 128, 256)."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3):
        super().__init__()
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, inplanes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for b in range(blocks):
                layers.append(BasicBlock(inplanes, planes, 2 if (b == 0 and stage > 0) else 1))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(inplanes, num_classes)

    def forward_features(self, x):
        x = self.layers(F.relu(self.bn1(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class WideBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None if inplanes == planes and stride == 1 else nn.Conv2d(inplanes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + residual


class WideResNet(ZooModel):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        layers, inplanes = [], widths[0]
        for stage, planes in enumerate(widths[1:]):
            for b in range(n):
                layers.append(WideBlock(inplanes, planes, 2 if (b == 0 and stage > 0) else 1))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(inplanes)
        self.classifier = nn.Linear(inplanes, num_classes)

    def forward_features(self, x):
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


_VGG = {8: [[64], [128], [256], [512], [512]], 13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]}


class VGG(ZooModel):
    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        layers, inplanes = [], in_channels
        for stage, widths in enumerate(_VGG[depth]):
            for width in widths:
                layers += [nn.Conv2d(inplanes, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                inplanes = width
            if stage < 4:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward_features(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1)


class TorchvisionWrapper(ZooModel):
    """A torchvision backbone with its head moved to ``classifier`` and a 32-pixel stem."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward_features(self, x):
        return self.backbone(x)


def resnet18_cifar(num_classes: int, in_channels: int = 3) -> ZooModel:
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return TorchvisionWrapper(net, 512, num_classes)


def mobilenetv2_cifar(num_classes: int, in_channels: int = 3) -> ZooModel:
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None, width_mult=1.0)
    first = net.features[0][0]
    net.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, 1, 1, bias=False)  # stride 1 for 32 px
    net.classifier = nn.Identity()
    return TorchvisionWrapper(net, 1280, num_classes)


class SmallCNN(ZooModel):
    """Conv net for small images (digits 8x8, MNIST 28x28): width w, two conv stages, global pooling."""

    def __init__(self, num_classes: int, in_channels: int = 1, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward_features(self, x):
        return torch.flatten(F.adaptive_avg_pool2d(self.body(x), 1), 1)
