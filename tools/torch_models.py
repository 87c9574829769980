"""Small PyTorch networks exported to ONNX, for tests and benchmarks (needs torch; reuserun doesn't).

Each module keeps the structure its family is known for (and that an exporter turns into the
ONNX patterns real models contain: Slice for space-to-depth, Clip for ReLU6, Reshape+Transpose in
YOLO's head, pytorch_half_pixel Resize, ConvTranspose) at widths small enough that it exports in
about a second and runs in milliseconds at 64-128 px. torchvision is not used.

    model, shape = build("yolov5")   # seeded weights, random BatchNorm statistics, eval mode
    proto = export(model, shape)     # onnx.ModelProto, opset 17, input "images"
"""
from __future__ import annotations

import io
import warnings

import onnx
import torch
import torch.nn.functional as F
from torch import nn

OPSET = 17


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1,
            act: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act if act is not None else nn.Identity())


# --- ResNet ---------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(cin, cout, 3, stride, act=nn.ReLU()),
                                  conv_bn(cout, cout, 3))
        self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.body(x) + self.down(x))


class ResNetBlocks(nn.Module):
    """ResNet: 7x7 s2 stem, 3x3 s2 maxpool, basic blocks with 1x1 s2 downsampling, GAP + Linear."""

    def __init__(self, widths=(8, 16, 32, 64), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, widths[0], 7, 2, act=nn.ReLU()),
                                  nn.MaxPool2d(3, 2, 1))
        blocks, cin = [], widths[0]
        for i, c in enumerate(widths):
            blocks += [BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c, 1)]
            cin = c
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- MobileNet V2 / V3 ----------------------------------------------------------------------

class ReLU6(nn.Module):
    def forward(self, x):
        return torch.clamp(x, 0.0, 6.0)  # exported as Clip(0, 6)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, depthwise 3x3, 1x1 linear project, residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        layers = [conv_bn(cin, mid, 1, act=ReLU6())] if expand != 1 else []
        layers += [conv_bn(mid, mid, 3, stride, groups=mid, act=ReLU6()), conv_bn(mid, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2Blocks(nn.Module):
    # expand, out channels, repeats, first stride (MobileNetV2's table, shortened and narrowed)
    SETTINGS = [(1, 8, 1, 1), (6, 12, 2, 2), (6, 16, 2, 2), (6, 24, 2, 2), (6, 32, 1, 1)]

    # the paper's full table (Sandler et al. 2018, width 1.0): the ImageNet classifier
    FULL = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1)]

    def __init__(self, classes: int = 10, settings=None, stem: int = 16, head: int = 64):
        super().__init__()
        layers, cin = [conv_bn(3, stem, 3, 2, act=ReLU6())], stem
        for t, c, n, s in settings or self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, head, 1, act=ReLU6()))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(head, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        mid = max(8, c // 4)
        self.fc1, self.fc2 = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class Bneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, stride: int, se: bool, hs: bool):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers = [conv_bn(cin, mid, 1, act=act())] if mid != cin else []
        layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=act()))
        if se:
            layers.append(SqueezeExcite(mid))
        layers.append(conv_bn(mid, cout, 1))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV3Blocks(nn.Module):
    # in, expanded, out, kernel, stride, squeeze-excite, hardswish (V3-Small's pattern, narrowed)
    SETTINGS = [(16, 16, 16, 3, 2, True, False), (16, 48, 24, 3, 2, False, False),
                (24, 64, 24, 3, 1, False, False), (24, 64, 32, 5, 2, True, True),
                (32, 96, 32, 5, 1, True, True), (32, 96, 48, 5, 2, True, True)]

    def __init__(self, classes: int = 10):
        super().__init__()
        layers = [conv_bn(3, 16, 3, 2, act=nn.Hardswish())]
        layers += [Bneck(*s) for s in self.SETTINGS]
        layers.append(conv_bn(48, 96, 1, act=nn.Hardswish()))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(96, 128), nn.Hardswish(), nn.Linear(128, classes))

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --- EfficientNet (timm's style: means, not adaptive pooling) -------------------------------

class MeanSqueezeExcite(nn.Module):
    """Squeeze-excite as timm writes it: x.mean((2, 3), keepdim=True), exported as ReduceMean."""

    def __init__(self, c: int, mid: int):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, mid, 1), nn.Conv2d(mid, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, k: int, stride: int):
        super().__init__()
        mid = cin * expand
        layers = [conv_bn(cin, mid, 1, act=nn.SiLU())] if expand != 1 else []
        layers += [conv_bn(mid, mid, k, stride, groups=mid, act=nn.SiLU()),
                   MeanSqueezeExcite(mid, max(4, cin // 4)), conv_bn(mid, cout, 1)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class EfficientNetBlocks(nn.Module):
    """EfficientNet-B0's pattern, narrowed: SiLU MBConv blocks with squeeze-excite, a 1x1 head
    and a spatial mean (ReduceMean without keepdims) before the classifier."""
    # in, out, expansion, kernel, stride
    SETTINGS = [(16, 16, 1, 3, 1), (16, 24, 4, 3, 2), (24, 24, 4, 3, 1), (24, 40, 4, 5, 2),
                (40, 48, 4, 3, 2)]

    def __init__(self, classes: int = 10):
        super().__init__()
        layers = [conv_bn(3, 16, 3, 2, act=nn.SiLU())]
        layers += [MBConv(*s) for s in self.SETTINGS]
        layers.append(conv_bn(48, 96, 1, act=nn.SiLU()))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(96, classes)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


# --- U-Net ----------------------------------------------------------------------------------

def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout, act=nn.ReLU()), conv_bn(cout, cout, act=nn.ReLU()))


class UNetSmall(nn.Module):
    """MaxPool encoder; decoder with bilinear upsampling (align_corners=False) on two levels and
    ConvTranspose2d on one, each concatenated with its skip; one-channel sigmoid map."""

    def __init__(self, w: int = 8):
        super().__init__()
        self.e0, self.e1 = double_conv(3, w), double_conv(w, 2 * w)
        self.e2, self.mid = double_conv(2 * w, 4 * w), double_conv(4 * w, 8 * w)
        self.d2 = double_conv(12 * w, 4 * w)
        self.up1 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2)
        self.d1 = double_conv(4 * w, 2 * w)
        self.d0 = double_conv(3 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x):
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        e0 = self.e0(x)
        e1 = self.e1(F.max_pool2d(e0, 2))
        e2 = self.e2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([up(m), e2], 1))
        d1 = self.d1(torch.cat([self.up1(d2), e1], 1))
        d0 = self.d0(torch.cat([up(d1), e0], 1))
        return torch.sigmoid(self.head(d0))


# --- YOLOv5 ---------------------------------------------------------------------------------

def cbs(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return conv_bn(cin, cout, k, s, act=nn.SiLU())


class Focus(nn.Module):
    """Space-to-depth by strided slicing (YOLOv5 before v6), then a 3x3 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = cbs(4 * cin, cout, 3)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2],
                                    x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class Bottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1, self.cv2, self.add = cbs(c, c, 1), cbs(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        h = cout // 2
        self.cv1, self.cv2, self.cv3 = cbs(cin, h), cbs(cin, h), cbs(2 * h, cout)
        self.m = nn.Sequential(*(Bottleneck(h, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class SPPF(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.cv1, self.cv2 = cbs(c, c // 2), cbs(2 * c, c)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class Detect(nn.Module):
    """(bs, na*no, ny, nx) -> (bs, na, ny, nx, no) with view + permute, then sigmoid, per level."""

    def __init__(self, chs, classes: int = 4, na: int = 3):
        super().__init__()
        self.na, self.no = na, classes + 5
        self.m = nn.ModuleList(nn.Conv2d(c, na * self.no, 1) for c in chs)

    def forward(self, xs):
        out = []
        for conv, x in zip(self.m, xs):
            y = conv(x)
            bs, _, ny, nx = y.shape
            y = y.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            out.append(y.sigmoid())
        return tuple(out)


class YoloV5Small(nn.Module):
    """YOLOv5 at small width: Focus stem, C3 backbone, SPPF, FPN+PAN neck, Detect at /8 /16 /32."""

    def __init__(self, w: int = 8, classes: int = 4):
        super().__init__()
        self.stem = Focus(3, w)                                            # /2
        self.b1 = nn.Sequential(cbs(w, 2 * w, 3, 2), C3(2 * w, 2 * w))      # /4
        self.b2 = nn.Sequential(cbs(2 * w, 4 * w, 3, 2), C3(4 * w, 4 * w, 2))   # /8
        self.b3 = nn.Sequential(cbs(4 * w, 8 * w, 3, 2), C3(8 * w, 8 * w, 2))   # /16
        self.b4 = nn.Sequential(cbs(8 * w, 16 * w, 3, 2), C3(16 * w, 16 * w), SPPF(16 * w))
        self.h5, self.p4 = cbs(16 * w, 8 * w), C3(16 * w, 8 * w, shortcut=False)
        self.h4, self.p3 = cbs(8 * w, 4 * w), C3(8 * w, 4 * w, shortcut=False)
        self.d3, self.n4 = cbs(4 * w, 4 * w, 3, 2), C3(8 * w, 8 * w, shortcut=False)
        self.d4, self.n5 = cbs(8 * w, 8 * w, 3, 2), C3(16 * w, 16 * w, shortcut=False)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.detect = Detect((4 * w, 8 * w, 16 * w), classes)

    def forward(self, x):
        c3 = self.b2(self.b1(self.stem(x)))
        c4 = self.b3(c3)
        h5 = self.h5(self.b4(c4))
        h4 = self.h4(self.p4(torch.cat([self.up(h5), c4], 1)))
        p3 = self.p3(torch.cat([self.up(h4), c3], 1))
        n4 = self.n4(torch.cat([self.d3(p3), h4], 1))
        n5 = self.n5(torch.cat([self.d4(n4), h5], 1))
        return self.detect([p3, n4, n5])


# --- YOLOv4 (Mish, CSP stages, SPP) -------------------------------------------------------

def cbm(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return conv_bn(cin, cout, k, s, act=nn.Mish())


class CSPStage(nn.Module):
    """CSPDarknet's stage: a strided conv, then two halves, one through residual blocks."""

    def __init__(self, cin: int, cout: int, n: int = 1):
        super().__init__()
        h = cout // 2
        self.down = cbm(cin, cout, 3, 2)
        self.a, self.b = cbm(cout, h), cbm(cout, h)
        self.blocks = nn.ModuleList(nn.Sequential(cbm(h, h), cbm(h, h, 3)) for _ in range(n))
        self.out = cbm(2 * h, cout)

    def forward(self, x):
        x = self.down(x)
        y = self.b(x)
        for block in self.blocks:
            y = y + block(y)
        return self.out(torch.cat([self.a(x), y], 1))


class YoloV4Small(nn.Module):
    """YOLOv4 at small width: Mish (exported at opset 17 as Softplus, Tanh, Mul), CSP stages,
    SPP with 5/9/13 max pools, an upsampling neck (LeakyReLU) and heads at /8 and /16."""

    def __init__(self, w: int = 8, classes: int = 4):
        super().__init__()
        self.stem = cbm(3, w, 3)
        self.s1, self.s2, self.s3 = CSPStage(w, 2 * w), CSPStage(2 * w, 4 * w), CSPStage(4 * w, 8 * w, 2)
        self.s4 = CSPStage(8 * w, 16 * w)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.spp = conv_bn(64 * w, 8 * w, act=nn.LeakyReLU(0.1))
        self.lat = conv_bn(8 * w, 4 * w, act=nn.LeakyReLU(0.1))
        self.fuse = conv_bn(12 * w, 8 * w, 3, act=nn.LeakyReLU(0.1))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.detect = Detect((8 * w, 8 * w), classes)

    def forward(self, x):
        c3 = self.s3(self.s2(self.s1(self.stem(x))))
        c4 = self.s4(c3)
        p4 = self.spp(torch.cat([c4] + [pool(c4) for pool in self.pools], 1))
        p3 = self.fuse(torch.cat([self.up(self.lat(p4)), c3], 1))
        return self.detect([p3, p4])


# --- DBNet head and HRNet block -------------------------------------------------------------

class DBNetHead(nn.Module):
    """DBNet-like text detector: strided backbone, FPN (lateral 1x1, nearest upsample + add, 3x3
    smoothing, upsample all to /4 and concat), probability head with two ConvTranspose 2x2 s2."""

    def __init__(self, w: int = 8, inner: int = 16):
        super().__init__()
        chs = (2 * w, 4 * w, 8 * w, 16 * w)
        self.stem = conv_bn(3, w, 3, 2, act=nn.ReLU())                    # /2
        self.stages = nn.ModuleList()
        cin = w
        for c in chs:                                                      # /4 /8 /16 /32
            self.stages.append(nn.Sequential(conv_bn(cin, c, 3, 2, act=nn.ReLU()),
                                             conv_bn(c, c, 3, act=nn.ReLU())))
            cin = c
        self.lateral = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False) for c in chs)
        self.smooth = nn.ModuleList(nn.Conv2d(inner, inner // 4, 3, padding=1, bias=False)
                                    for _ in chs)
        self.head = nn.Sequential(
            conv_bn(inner, inner // 4, 3, act=nn.ReLU()),
            nn.ConvTranspose2d(inner // 4, inner // 4, 2, 2), nn.BatchNorm2d(inner // 4), nn.ReLU(),
            nn.ConvTranspose2d(inner // 4, 1, 2, 2), nn.Sigmoid())

    def forward(self, x):
        feats, x = [], self.stem(x)
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 2, -1, -1):  # top-down
            lat[i] = lat[i] + F.interpolate(lat[i + 1], scale_factor=2, mode="nearest")
        outs = [F.interpolate(s(l), scale_factor=2 ** i, mode="nearest") if i else s(l)
                for i, (s, l) in enumerate(zip(self.smooth, lat))]
        return self.head(torch.cat(outs, 1))


class HRNetBlock(nn.Module):
    """HRNet-like: a high- and a low-resolution branch in parallel, fused both ways (strided conv
    + add down, 1x1 conv + nearest upsample + add up), twice; heatmaps from the high branch."""

    def __init__(self, w: int = 8, joints: int = 5):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 2 * w, 3, 2, act=nn.ReLU()),
                                  conv_bn(2 * w, 2 * w, 3, 2, act=nn.ReLU()))   # /4
        self.to_high = conv_bn(2 * w, w, 3, act=nn.ReLU())
        self.to_low = conv_bn(2 * w, 2 * w, 3, 2, act=nn.ReLU())                # /8
        self.fuses = nn.ModuleList()
        for _ in range(2):
            self.fuses.append(nn.ModuleDict({
                "high": nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1)),
                "low": nn.Sequential(BasicBlock(2 * w, 2 * w, 1), BasicBlock(2 * w, 2 * w, 1)),
                "down": conv_bn(w, 2 * w, 3, 2),
                "up": conv_bn(2 * w, w, 1)}))
        self.head = nn.Conv2d(w, joints, 1)

    def forward(self, x):
        x = self.stem(x)
        hi, lo = self.to_high(x), self.to_low(x)
        for f in self.fuses:
            hi, lo = f["high"](hi), f["low"](lo)
            hi, lo = (F.relu(hi + F.interpolate(f["up"](lo), scale_factor=2, mode="nearest")),
                      F.relu(lo + f["down"](hi)))
        return self.head(hi)


TORCH_MODELS = {
    "resnet": (ResNetBlocks, (1, 3, 96, 96)),
    "mobilenetv2": (MobileNetV2Blocks, (1, 3, 96, 96)),
    "mobilenetv3": (MobileNetV3Blocks, (1, 3, 96, 96)),
    "efficientnet": (EfficientNetBlocks, (1, 3, 96, 96)),
    "unet": (UNetSmall, (1, 3, 64, 64)),
    "yolov5": (YoloV5Small, (1, 3, 128, 128)),
    "yolov4": (YoloV4Small, (1, 3, 128, 128)),
    "dbnet": (DBNetHead, (1, 3, 128, 128)),
    "hrnet": (HRNetBlock, (1, 3, 64, 64)),
}


def build(name: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Constructs TORCH_MODELS[name] with seeded weights and random BatchNorm statistics.

    torch's default init shrinks activations layer by layer (outputs end up almost constant,
    which would make exactness tests weak), so weights are redrawn He-style. Fresh BatchNorms are
    the identity in eval mode; random running stats and affine params make BN folding do real work.
    """
    ctor, shape = TORCH_MODELS[name]
    torch.manual_seed(seed)
    model = ctor()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=gen)
            elif isinstance(m, nn.ConvTranspose2d):  # (cin, cout/g, k, k); k == stride here,
                m.weight.normal_(0.0, (2.0 / m.in_channels) ** 0.5, generator=gen)  # 1 tap each
            elif isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.empty(n).uniform_(0.8, 1.2, generator=gen))
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.empty(n).uniform_(0.8, 1.25, generator=gen))
        for m in model.modules():  # keep residual sums from growing with depth
            if isinstance(m, (BasicBlock, InvertedResidual, Bneck, MBConv)):
                m.body[-1][1].weight.mul_(0.5)
            elif isinstance(m, Bottleneck):
                m.cv2[1].weight.mul_(0.5)
    return model.eval(), shape


def sample_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Pixels in [0, 1], like reuserun.sources frames."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def export(module: nn.Module, shape: tuple[int, ...], path: str | None = None) -> onnx.ModelProto:
    """Exports in eval mode with the TorchScript exporter (dynamo=False), opset 17, input "images".

    The dynamo exporter needs onnxscript, which is not installed here; the TorchScript one still
    works in torch 2.13 (with a DeprecationWarning, silenced below).
    """
    module.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (sample_input(shape),), buf, dynamo=False,
                          opset_version=OPSET, input_names=["images"], do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    if path is not None:
        onnx.save(model, path)
    return model


if __name__ == "__main__":
    import sys
    import time

    import numpy as np
    import onnxruntime as ort

    for name in sys.argv[1:] or TORCH_MODELS:
        model, shape = build(name)
        t0 = time.perf_counter()
        proto = export(model, shape)
        t1 = time.perf_counter()
        x = sample_input(shape, seed=1)
        with torch.no_grad():
            ref = model(x)
        ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"images": x.numpy()})
        err = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
        ops = sorted({n.op_type for n in proto.graph.node})
        print(f"{name}: export {t1 - t0:.2f}s, max |ort - torch| {err:.2e}, "
              f"outputs {[g.shape for g in got]}, ops {ops}")
