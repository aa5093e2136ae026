"""ICNet's cascade: the high-resolution branch and cascade feature fusion (CFF)."""

from __future__ import annotations

from torch import Tensor, nn

from .layers import Classifier, ConvBN, resize


class HighResBranch(nn.Sequential):
    """Three 3x3 stride-2 conv-BN-ReLU on the full image: N x 3 x H x W -> N x C x H/8 x W/8."""

    def __init__(self, in_channels: int, channels: tuple[int, int, int]) -> None:
        c1, c2, c3 = channels
        super().__init__(
            ConvBN(in_channels, c1, 3, stride=2),
            ConvBN(c1, c2, 3, stride=2),
            ConvBN(c2, c3, 3, stride=2),
        )
        self.out_channels = c3


class CascadeFeatureFusion(nn.Module):
    """Fuse a coarse map into a finer one (ICNet, Fig. 3 of Zhao et al. 2018).

    low  -> upsample to the high map's size -> 3x3 conv, dilation 2, + BN (no ReLU)
    high -> 1x1 conv + BN
    out  = ReLU(low + high)

    The upsampled low map also feeds a 1x1 auxiliary classifier: cascade label guidance.
    Upsampling goes to the high map's exact size (not a fixed x2), so odd input sizes work.
    """

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, num_classes: int, *, align_corners: bool
    ) -> None:
        super().__init__()
        self.low = ConvBN(low_channels, out_channels, 3, dilation=2, relu=False)
        self.high = ConvBN(high_channels, out_channels, 1, relu=False)
        self.aux_classifier = Classifier(low_channels, num_classes)
        self.relu = nn.ReLU(inplace=True)
        self.align_corners = align_corners
        self.out_channels = out_channels

    def forward(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor | None]:
        # low: N x Cl x h x w, high: N x Ch x H' x W'  ->  N x Cout x H' x W', aux N x K x H' x W'
        low = resize(low, high.shape[-2:], self.align_corners)
        aux = self.aux_classifier(low) if self.training else None
        return self.relu(self.low(low) + self.high(high)), aux
