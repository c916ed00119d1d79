"""The network families, by the name a config's and a checkpoint's `family` key gives: (Generator, Discriminator)."""

from stylegan.models import stylegan1, stylegan2

FAMILIES = {"stylegan2": (stylegan2.Generator, stylegan2.Discriminator),
            "stylegan1": (stylegan1.Generator, stylegan1.Discriminator)}
