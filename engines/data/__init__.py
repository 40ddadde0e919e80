"""Data: turning a pile of pictures into a training set (docs/data.md).

- ``prepare``: read folders/zips/tars safely, pad, resize, cache as one uint8 tensor (``pokelab data prepare``)
- ``fetch``: download the public Pokémon artwork (``pokelab data fetch``)
- ``background``: rembg background removal, offline models only
- ``images``: tensors <-> uint8 pictures, grids and GIFs on disk

Importing the package imports none of them (the studio stays torch-free).
"""
